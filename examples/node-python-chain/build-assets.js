// Run by the node buildpack's build script: what a Python app's asset step does.
require("fs").writeFileSync("assets.txt", `assets built by Node.js ${process.version}\n`);
