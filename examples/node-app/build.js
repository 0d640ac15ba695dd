// The build script: runs with devDependencies installed, before they are pruned.
const fs = require("fs");
fs.writeFileSync("built.txt", require("devtool")() + "\n");
