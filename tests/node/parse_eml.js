// Parse messages with npm `mailparser` (an independent MIME parser) and print what it saw, as JSON:
// the headers it decoded, the text and HTML bodies, and every other part ("attachments", which is
// where mailparser puts text/x-amp-html). Input on stdin: a JSON array of messages (7-bit text); one
// node start for a batch, since starting node costs more than parsing.
//   node parse_eml.js <node_modules dir> < messages.json
"use strict";
const path = require("path");
const { simpleParser } = require(path.resolve(process.argv[2], "mailparser"));

const addresses = (field) => (field ? field.value.map(({ name, address }) => ({ name, address })) : null);

async function parse(raw) {
    const mail = await simpleParser(Buffer.from(raw, "utf8"), { skipTextToHtml: true, skipImageLinks: true });
    return {
        header_names: [...mail.headers.keys()],
        date: mail.date ? mail.date.toISOString() : null,
        from: addresses(mail.from),
        to: addresses(mail.to),
        subject: mail.subject ?? null,
        message_id: mail.messageId ?? null,
        mime_version: mail.headers.get("mime-version") ?? null,
        content_type: mail.headers.get("content-type")?.value ?? null,
        text: mail.text ?? null,
        html: mail.html === false ? null : mail.html,
        others: mail.attachments.map((part) => ({
            content_type: part.contentType,
            charset: part.headers.get("content-type")?.params?.charset ?? null,
            transfer_encoding: part.headers.get("content-transfer-encoding") ?? null,
            content: part.content.toString("utf8"),
        })),
    };
}

async function main() {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    const messages = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const results = [];
    for (const raw of messages) results.push(await parse(raw));
    process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
    process.stderr.write(`parse_eml: ${error.stack || error}\n`);
    process.exit(1);
});
