module.exports = () => "built with devtool";
