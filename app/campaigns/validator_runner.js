#!/usr/bin/env node
// Batch AMP validator: one node start and one wasm init serve many documents.
//
// Usage: node validator_runner.js <validator_wasm.js> [<amphtml-validator module dir>]
//   stdin:  JSON array of HTML strings
//   stdout: JSON array, same order: {status, errors: [{line, col, code, message, severity, specUrl}]}
//   exit 0 once every document was validated (PASS or FAIL); exit 2 on bad usage or input;
//   exit 1 when the validator itself cannot load or crashes.
// Without the module dir, `amphtml-validator` is resolved through NODE_PATH.
'use strict';

const fs = require('fs');
const path = require('path');

const HTML_FORMAT = 'AMP4EMAIL';

function fail(code, message) {
  process.stderr.write(`validator_runner: ${message}\n`);
  process.exitCode = code;
}

function loadModule(moduleDir) {
  return require(moduleDir ? path.resolve(moduleDir) : 'amphtml-validator');
}

function readDocuments() {
  const docs = JSON.parse(fs.readFileSync(0, 'utf8'));
  if (!Array.isArray(docs) || !docs.every((doc) => typeof doc === 'string')) {
    throw new TypeError('stdin must be a JSON array of strings');
  }
  return docs;
}

function toResult(result) {
  return {
    status: result.status,
    errors: result.errors.map((error) => ({
      line: error.line,
      col: error.col,
      code: error.code,
      message: error.message,
      severity: error.severity,
      specUrl: error.specUrl || null,
    })),
  };
}

async function main(argv) {
  if (argv.length < 1 || argv.length > 2) {
    return fail(2, 'usage: validator_runner.js <validator_wasm.js> [<amphtml-validator dir>]');
  }
  let docs;
  try {
    docs = readDocuments();
  } catch (error) {
    return fail(2, `bad input: ${error.message}`);
  }
  const validator = await loadModule(argv[1]).getInstance(path.resolve(argv[0]));
  const results = docs.map((doc) => toResult(validator.validateString(doc, HTML_FORMAT)));
  // No process.exit(): it could cut a large write to a pipe short.
  process.stdout.write(JSON.stringify(results) + '\n');
}

main(process.argv.slice(2)).catch((error) => fail(1, (error && error.stack) || String(error)));
