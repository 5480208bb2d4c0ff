// Runs the Firebase Auth emulator from firebase-tools (installed by `npm ci` at the repo root)
// without the `firebase emulators:start` wrapper (no hub, logging or UI ports to collide).
// Usage: node auth_emulator.js HOST PORT PROJECT_ID.  Prints "ready" once it listens.
const { AuthEmulator, SingleProjectMode } = require("firebase-tools/lib/emulator/auth");

const [host, port, projectId] = process.argv.slice(2);
const emulator = new AuthEmulator({
  host,
  port: Number(port),
  projectId,
  singleProjectMode: SingleProjectMode.NO_WARNING,
});
emulator.start().then(
  () => console.log(`ready ${host}:${port} ${projectId}`),
  (err) => { console.error(err); process.exit(1); },
);
const stop = () => emulator.stop().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
