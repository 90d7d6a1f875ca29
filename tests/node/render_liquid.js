// Render a Liquid template with LiquidJS (Shopify-compatible; hmac_sha256 is one of its own filters).
// Input on stdin: {"template": "...", "context": {...}}; output: the rendered text.
// Strict: an unknown filter or variable is an error, so a filter missing from the engine cannot pass.
//   node render_liquid.js <node_modules dir> < input.json
"use strict";
const path = require("path");
const { Liquid } = require(path.resolve(process.argv[2], "liquidjs"));

async function main() {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    const { template, context } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const engine = new Liquid({ strictFilters: true, strictVariables: true });
    process.stdout.write(await engine.parseAndRender(template, context));
}

main().catch((error) => {
    process.stderr.write(`render_liquid: ${error.stack || error}\n`);
    process.exit(1);
});
