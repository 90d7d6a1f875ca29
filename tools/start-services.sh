#!/usr/bin/env bash
# Start the local PostgreSQL, Redis and RabbitMQ the tests use, when they are down (the commands this machine
# kind documents); a no-op when all answer. Tests never skip because a service is down: CI starts it.
set -euo pipefail

wait_for() {  # wait_for <what> <command...>: up to 30 s
    local what=$1; shift
    for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "$what did not come up" >&2; return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
    wait_for RabbitMQ rabbitmqctl status
    wait_for "RabbitMQ port 5672" bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672'
fi
