// Reads one JSON text per line and prints JSON.stringify(JSON.parse(line)) for each.
const rl = require('readline').createInterface({ input: process.stdin });
rl.on('line', (line) => process.stdout.write(JSON.stringify(JSON.parse(line)) + '\n'));
