vcl 4.1;
# Varnish in front of Opentime nodes: the CDN of the deployed topology, and a sender's starting point
# for their own CDN (the same rules, in whatever language that CDN speaks). Varnish 7.1 (Debian).
#
# What it does (README "Deploying" explains the why):
# - TTL from the targeted headers Opentime sends its CDN (CDN-Cache-Control, RFC 9213, else
#   Surrogate-Control), never from Cache-Control: that one tells mail proxies and browsers
#   "no-cache" so they ask again at every open. Per-recipient images: 30 s; a running countdown:
#   1 s; an ended campaign countdown or a shared image: what the block says; fallbacks: 5 s.
# - stale-if-error becomes grace, used only when no node is healthy (see vcl_recv).
# - Anything private or no-store is never kept: amp-list JSON, forms, HTML fragments and the web view
#   depend on the recipient and on the sending mailbox (AMP CORS echoes Origin / AMP-Email-Sender /
#   __amp_source_origin), so they are passed to a node every time, never shared.
# - Surrogate-* headers are for this cache only and are removed before the client.
# - Round robin over three nodes, each probed at /healthz; a dead node is skipped, and a GET that
#   fails on one node is retried on the next, so opens keep answering while a node is down. A node
#   that comes back passes its probes and gets traffic again with no manual step.
# - Purge by surrogate key: BAN (or PURGE) with a "Surrogate-Key: r-<hash>" (one recipient, from
#   `opentime cdn key RECIPIENT`) or "Surrogate-Key: c-<campaign>" header, from the purgers ACL
#   and with "Purge-Token: <the VARNISH_PURGE_TOKEN of varnishd's environment>". PURGE without
#   Surrogate-Key purges the one URL.
#
# To use: replace the three backends' host/port (compose service names here), and start varnishd
# with VARNISH_PURGE_TOKEN in its environment (without it, purges are refused).

import std;
import directors;

probe healthz {
    .url = "/healthz";
    .timeout = 1s;
    .interval = 1s;
    .window = 3;
    .threshold = 2;  # healthy again after two good probes in a row: a restarted node rejoins in ~2 s
}

# One line per node: tests/topology.py rewrites these `.host = ...; .port = ...;` pairs in order.
backend node1 { .host = "node1"; .port = "8000"; .probe = healthz; .connect_timeout = 1s; .first_byte_timeout = 5s; }
backend node2 { .host = "node2"; .port = "8000"; .probe = healthz; .connect_timeout = 1s; .first_byte_timeout = 5s; }
backend node3 { .host = "node3"; .port = "8000"; .probe = healthz; .connect_timeout = 1s; .first_byte_timeout = 5s; }

# Who may purge: this host and private networks (the operator's and Opentime's own machines).
acl purgers {
    "127.0.0.1";
    "::1";
    "10.0.0.0"/8;
    "172.16.0.0"/12;
    "192.168.0.0"/16;
}

sub vcl_init {
    new cluster = directors.round_robin();
    cluster.add_backend(node1);
    cluster.add_backend(node2);
    cluster.add_backend(node3);
}

sub vcl_recv {
    set req.backend_hint = cluster.backend();
    if (req.method == "BAN" || req.method == "PURGE") {
        call opentime_purge;
    }
    # Metrics are for the internal network: scrape the nodes directly.
    if (req.url ~ "^/metrics") {
        return (synth(404, "Not Found"));
    }
    # stale-if-error: stale copies are served only while no node is healthy; otherwise an expired
    # copy is fetched again (Varnish's grace would serve it stale while refreshing, at every expiry).
    if (std.healthy(req.backend_hint)) {
        set req.grace = 0s;
    }
    call vcl_req_host;
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Images (per-recipient, campaign-wide, countdowns, fallbacks) and static pictures are the only
    # cacheable answers; everything else is per recipient and per sender, or for systems: pass.
    if (req.url ~ "^/v1/[^/]+/img/" || req.url ~ "^/static/") {
        # A mail client's cookies for the sender's domain change nothing Opentime answers.
        unset req.http.Cookie;
        return (hash);
    }
    return (pass);
}

sub opentime_purge {
    if (client.ip !~ purgers) {
        return (synth(403, "Forbidden"));
    }
    # No token configured: nobody may purge (a missing secret must not mean "no secret needed").
    if (std.getenv("VARNISH_PURGE_TOKEN") == "" || req.http.Purge-Token != std.getenv("VARNISH_PURGE_TOKEN")) {
        return (synth(403, "Forbidden"));
    }
    if (!req.http.Surrogate-Key && req.method == "PURGE") {
        return (purge);
    }
    # One key a request, checked strictly: it becomes part of a ban expression (a regex).
    if (req.http.Surrogate-Key !~ "^(r-[0-9a-f]{16}|c-[a-z0-9][a-z0-9_-]{0,39})$") {
        return (synth(400, "Surrogate-Key must be r-<16 hex> or c-<campaign>"));
    }
    # Every object whose Surrogate-Key list names this key (keys are separated by spaces).
    if (std.ban("obj.http.Surrogate-Key ~ (^|[^a-z0-9_-])" + req.http.Surrogate-Key + "([^a-z0-9_-]|$)")) {
        return (synth(200, "Banned " + req.http.Surrogate-Key));
    }
    return (synth(400, std.ban_error()));
}

sub vcl_backend_response {
    # A node that errs: try another (GET/HEAD only: a POST may have been applied already).
    if (beresp.status >= 500 && bereq.retries < 2 && (bereq.method == "GET" || bereq.method == "HEAD")) {
        return (retry);
    }
    if (beresp.http.CDN-Cache-Control) {
        set beresp.http.Opentime-Cdn-Policy = beresp.http.CDN-Cache-Control;
    } elsif (beresp.http.Surrogate-Control) {
        set beresp.http.Opentime-Cdn-Policy = beresp.http.Surrogate-Control;
    }
    if (beresp.http.Opentime-Cdn-Policy) {
        call opentime_targeted_ttl;
    } elsif (beresp.http.Cache-Control ~ "(?i)(private|no-store)") {
        # Never kept: remember for 2 minutes that this URL is not cacheable (hit-for-miss).
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # Set-Cookie, Vary: * and no-store in Surrogate-Control: Varnish's own rules still apply.
}

sub opentime_targeted_ttl {
    if (beresp.http.Opentime-Cdn-Policy ~ "(?i)(private|no-store)") {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    set beresp.ttl = std.duration(
        regsub(beresp.http.Opentime-Cdn-Policy, "^(?:.*[,\s])?max-age=([0-9]+).*$", "\1s"), 0s);
    set beresp.grace = 0s;
    # A day of stale-if-error keeps expired copies in storage that long: the -s size bounds it, and
    # Varnish evicts the least recently used first when it is full.
    if (beresp.http.Opentime-Cdn-Policy ~ "stale-if-error=[0-9]+") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Opentime-Cdn-Policy, "^.*stale-if-error=([0-9]+).*$", "\1s"), 0s);
    }
    if (beresp.ttl <= 0s) {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # Keep the object in spite of "Cache-Control: no-cache" (which is for the mail proxies).
    call vcl_beresp_cookie;
    call vcl_beresp_vary;
    return (deliver);
}

sub vcl_backend_error {
    # A node that is gone (connection refused, timeout): try another before giving up.
    if (bereq.retries < 2 && (bereq.method == "GET" || bereq.method == "HEAD")) {
        return (retry);
    }
}

sub vcl_deliver {
    # For this cache only: the keys and policies are no business of mail clients and their proxies.
    unset resp.http.Surrogate-Key;
    unset resp.http.Surrogate-Control;
    unset resp.http.CDN-Cache-Control;
    unset resp.http.Opentime-Cdn-Policy;
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } elsif (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}

sub vcl_synth {
    # Short plain answers for purges and refusals (the built-in page is HTML).
    set resp.http.Content-Type = "text/plain; charset=utf-8";
    set resp.http.Cache-Control = "no-store";
    set resp.body = "" + resp.status + " " + resp.reason + {"
"};
    return (deliver);
}
