// Render mustache templates with mustache.js, the library amp-mustache is built on.
//   node mustache_runner.js <path to node_modules/mustache>  < [{"template": "...", "view": {...}}, ...]
// prints a JSON array of the rendered strings, in order. No partials: amp-mustache has none.
"use strict";
const Mustache = require(process.argv[2]);

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const jobs = JSON.parse(input);
  const out = jobs.map((job) => Mustache.render(job.template, job.view));
  process.stdout.write(JSON.stringify(out));
});
