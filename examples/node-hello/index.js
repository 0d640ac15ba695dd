const http = require("http");

http
  .createServer((req, res) => {
    res.setHeader("content-type", "text/plain");
    res.end(`Hello from Node.js ${process.version} (${process.execPath}; DYNO=${process.env.DYNO})\n`);
  })
  .listen(process.env.PORT || 5000);
