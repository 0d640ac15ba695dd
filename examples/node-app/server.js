const http = require("http");
const fs = require("fs");
const greet = require("greet");
const built = fs.readFileSync("built.txt", "utf8").trim();
http
  .createServer((req, res) => {
    res.setHeader("content-type", "text/plain");
    res.end(`${greet("Node.js " + process.version)} (${built}; NODE_ENV=${process.env.NODE_ENV}; DYNO=${process.env.DYNO})\n`);
  })
  .listen(process.env.PORT || 5000);
