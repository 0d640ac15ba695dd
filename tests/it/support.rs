//! The test harness: a real `gantry serve` on free ports in a temp home, driven
//! with the real `git` and OpenSSH `ssh` clients against the real Docker engine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gantry");

/// The repository root (for `examples/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the examples' base image once per test run.
pub fn ensure_base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("sh")
            .arg(root().join("examples/base-image.sh"))
            .output()
            .expect("run base-image.sh");
        assert!(
            out.status.success(),
            "base-image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Builds the default stack (trixie) once per test run, unless the engine has it.
pub fn ensure_stack() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let present = Command::new("docker")
            .args([
                "image",
                "inspect",
                "gantry/stack:trixie",
                "gantry/stack:trixie-build",
            ])
            .output()
            .expect("docker image inspect");
        if present.status.success() {
            return;
        }
        let home = tempfile::tempdir().expect("tempdir");
        let out = Command::new(BIN)
            .arg("--home")
            .arg(home.path())
            .arg("stack:build")
            .output()
            .expect("run gantry stack:build");
        assert!(
            out.status.success(),
            "stack:build failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A unique name for this test's apps and Docker objects.
pub fn unique(prefix: &str) -> String {
    static COUNTER: Mutex<u32> = Mutex::new(0);
    let mut n = COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    *n += 1;
    format!("{prefix}-{}-{}", std::process::id() % 100_000, *n)
}

/// An SSH key pair made with ssh-keygen.
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
}

pub fn make_key(dir: &Path, name: &str) -> Key {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    Key {
        public: private.with_extension("pub"),
        private,
    }
}

pub struct Server {
    pub home: tempfile::TempDir,
    pub ssh_port: u16,
    pub http_port: u16,
    pub admin: Key,
    pub network: String,
    pub https_port: u16,
    pub database_url: Option<String>,
    child: Option<Child>,
    pub banner: String,
}

impl Server {
    /// Starts gantry with an admin key registered and a short health timeout.
    pub fn start() -> Server {
        Self::start_with(None)
    }

    pub fn start_with(database_url: Option<String>) -> Server {
        Self::start_configured(database_url, "")
    }

    /// A home with its gantry.toml and an admin key file, and nothing else
    /// (no database, serve not started): for a restore into it.
    pub fn unlaunched(database_url: Option<String>) -> Server {
        Self::home_with(database_url, "")
    }

    /// A home whose gantry.toml has `extra` lines appended, and an admin
    /// key file; no database, serve not started.
    fn home_with(database_url: Option<String>, extra: &str) -> Server {
        ensure_base_image();
        let home = tempfile::tempdir().expect("tempdir");
        let network = unique("gantry-test");
        let https_port = free_port();
        std::fs::write(
            home.path().join("gantry.toml"),
            format!(
                // Runtimes are never fetched from the internet in tests
                // (none is reachable); the upstream test serves a mirror.
                "health_timeout = 8\nstop_grace = 2\ndocker_network = \"{network}\"\nhttps_listen = \"127.0.0.1:{https_port}\"\n{}\n",
                if extra.contains("runtimes.upstream") {
                    extra.to_owned()
                } else {
                    format!("runtimes.upstream = false\n{extra}")
                }
            ),
        )
        .expect("write gantry.toml");
        let admin = make_key(home.path(), "admin-key");
        Server {
            ssh_port: free_port(),
            http_port: free_port(),
            admin,
            network,
            https_port,
            database_url,
            child: None,
            banner: String::new(),
            home,
        }
    }

    /// Starts gantry with `extra` lines appended to its gantry.toml.
    pub fn start_configured(database_url: Option<String>, extra: &str) -> Server {
        let mut server = Self::home_with(database_url, extra);
        let out = server.cli(&[
            "keys:add",
            "tester",
            path_str(&server.admin.public),
            "--admin",
        ]);
        assert!(out.status.success(), "keys:add: {}", stderr(&out));
        if extra.contains("# proxy service") {
            // The proxy as systemd's socket activation starts it, on sockets
            // it was passed; serve leaves it alone.
            server.start_socket_activated_proxy();
            server.launch_with(&["--proxy-service"]);
        } else {
            server.launch();
        }
        server
    }

    /// Starts `gantry proxy` through `systemd-socket-activate`, which binds
    /// the HTTP and HTTPS ports and passes them as systemd does
    /// (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`).
    fn start_socket_activated_proxy(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home_path().join("proxy.log"))
            .expect("proxy log");
        let http = format!("127.0.0.1:{}", self.http_port);
        let https = format!("127.0.0.1:{}", self.https_port);
        let mut activator = Command::new("systemd-socket-activate")
            .args(["-l", &http, "-l", &https, "--fdname=http:https"])
            .arg(BIN)
            .arg("--home")
            .arg(self.home_path())
            .args(["proxy", "--http-listen", &http, "--https-listen", &https])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("systemd-socket-activate (apt-get install systemd)");
        // It becomes the proxy (exec), which `stop_proxy` ends; reap it then.
        std::thread::spawn(move || activator.wait());
        // It starts the program on the first connection, as a socket unit
        // without an enabled service would.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.http_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "systemd-socket-activate did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn home_path(&self) -> &Path {
        self.home.path()
    }

    /// A `gantry` command on this server's home.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--home").arg(self.home_path());
        // Keep the developer's own ~/.ssh out of first-start key registration.
        cmd.env("HOME", self.home_path());
        cmd.env_remove("GANTRY_HOME");
        if let Some(url) = &self.database_url {
            cmd.env("GANTRY_DATABASE_URL", url);
        }
        cmd
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run gantry")
    }

    /// Starts `serve` and waits until it prints its banner.
    pub fn launch(&mut self) {
        self.launch_with(&[]);
    }

    /// Starts `serve` with `extra` flags and waits until it prints its banner.
    pub fn launch_with(&mut self, extra: &[&str]) {
        let mut child = self
            .command()
            .arg("serve")
            .args(extra)
            .arg("--ssh-listen")
            .arg(format!("127.0.0.1:{}", self.ssh_port))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .env("GANTRY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.home_path().join("serve.log"))
                    .expect("log file"),
            ))
            .spawn()
            .expect("spawn gantry serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.starts_with("Manage:") {
                        break;
                    }
                }
                _ => panic!("gantry serve exited early:\n{banner}\n{}", self.log()),
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.banner = banner;
        self.child = Some(child);
    }

    /// The pid of `serve`.
    pub fn serve_pid(&self) -> u32 {
        self.child.as_ref().expect("serve runs").id()
    }

    /// Stops `serve` with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills `serve` with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home_path().join("serve.log")).unwrap_or_default()
    }

    pub fn ssh_base(&self, key: &Key) -> String {
        format!(
            "ssh -p {} -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes",
            self.ssh_port,
            key.private.display()
        )
    }

    /// `ssh git@localhost 'COMMAND'` with `key`: COMMAND reaches the server as
    /// written (one argument, so its own quotes survive).
    pub fn ssh(&self, key: &Key, command: &str) -> Output {
        let quoted = format!("'{}'", command.replace('\'', r"'\''"));
        let line = format!("{} git@127.0.0.1 {quoted}", self.ssh_base(key));
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .stdin(Stdio::null())
            .output()
            .expect("ssh")
    }

    pub fn remote(&self, app: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{app}", self.ssh_port)
    }

    /// `git ARGS` in `dir`, talking SSH with `key`.
    pub fn git(&self, key: &Key, dir: &Path, args: &[&str]) -> Output {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", self.ssh_base(key))
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Author")
            .env("GIT_COMMITTER_EMAIL", "author@example.com")
            .output()
            .expect("git")
    }

    /// GET / with `Host: APP.localhost`, via the proxy: (status, body).
    pub fn get(&self, app: &str) -> (u16, String) {
        http_get(self.http_port, &format!("{app}.localhost"), "/")
    }

    /// Polls until the app's body contains `needle`, or panics after `timeout`.
    pub fn wait_for_body(&self, app: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(app);
            if status == 200 && body.contains(needle) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{app} never served {needle:?}; last: {status} {body}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        // Remove what the test made in Docker: containers and images of its apps.
        // Through `command()`, so a Postgres-backed server's apps are found too.
        if let Ok(out) = self.command().args(["apps:list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
                if let Some(app) = line.split_whitespace().next() {
                    let _ = self
                        .command()
                        .args(["apps:destroy", app, "--force"])
                        .output();
                }
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
        self.stop_proxy();
    }
}

impl Server {
    /// The pid of the proxy process `serve` started, while it runs.
    pub fn proxy_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.home_path().join("proxy/proxy.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Stops the proxy process (it outlives `serve` on purpose) and waits.
    pub fn stop_proxy(&self) {
        stop_proxy_in(self.home_path());
    }
}

/// Stops the proxy that a `serve` on `home` started, and waits for it.
pub fn stop_proxy_in(home: &Path) {
    let pid = std::fs::read_to_string(home.join("proxy/proxy.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(35);
        while Instant::now() < deadline && alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `pid` runs (a zombie nobody reaped yet holds no port: it does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A git repository made from `examples/NAME` (or empty), committed on `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn from_example(server: &Server, example: &str) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&root().join("examples").join(example), dir.path());
        let repo = Repo { dir };
        repo.run(server, &["init", "-q", "-b", "main"]);
        repo.commit(server, "first");
        repo
    }

    /// A repository with `files` (path, text) committed on `main`.
    pub fn with_files(server: &Server, files: &[(&str, &str)]) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for (path, text) in files {
            repo.write(path, text);
        }
        repo.run(server, &["init", "-q", "-b", "main"]);
        repo.commit(server, "first");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    pub fn commit(&self, server: &Server, message: &str) {
        self.run(server, &["add", "-A"]);
        self.run(server, &["commit", "-q", "--allow-empty", "-m", message]);
    }

    fn run(&self, server: &Server, args: &[&str]) {
        let out = server.git(&server.admin, self.path(), args);
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    }

    /// `git push REMOTE main` with `key`.
    pub fn push(&self, server: &Server, key: &Key, app: &str) -> Output {
        self.push_ref(server, key, app, "main")
    }

    pub fn push_ref(&self, server: &Server, key: &Key, app: &str, refspec: &str) -> Output {
        server.git(key, self.path(), &["push", &server.remote(app), refspec])
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

pub fn http_get(port: u16, host: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with_headers(port, host, path);
    (status, body)
}

/// Like [`http_get`], with the response headers, names lowercased.
pub fn http_get_with_headers(
    port: u16,
    host: &str,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Default::default(), String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // HTTP/1.0: the answer is close-delimited, never chunked, so the body reads as is.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, Default::default(), String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// The ids of the running containers of `app`.
pub fn containers_of(app: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=gantry.app={app}")])
        .output()
        .expect("docker ps");
    stdout(&out).lines().map(str::to_owned).collect()
}

/// One-off containers (cron runs, `run`, release phases) of `app`, running or not.
pub fn oneoff_containers_of(app: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=gantry.oneoff={app}"),
        ])
        .output()
        .expect("docker ps");
    stdout(&out).lines().map(str::to_owned).collect()
}

/// A dashboard page as the admin sees it, through the proxy (logged in with
/// a `web:login` link, its session cookie kept by curl): (status, body).
pub fn dashboard_get(server: &Server, path: &str) -> (u16, String) {
    let out = server.ssh(&server.admin, "web:login");
    assert!(out.status.success(), "{}", stderr(&out));
    let link = stdout(&out)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a login link")
        .to_owned();
    let jar = tempfile::NamedTempFile::new().expect("temp");
    let resolve = format!("gantry.localhost:{}:127.0.0.1", server.http_port);
    let url = format!("http://gantry.localhost:{}{path}", server.http_port);
    let out = Command::new("curl")
        .args(["-s", "-c", path_str(jar.path()), "-o", "/dev/null"])
        .args(["--resolve", &resolve, &link])
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new("curl")
        .args(["-s", "-b", path_str(jar.path()), "-w", "\n%{http_code}"])
        .args(["--resolve", &resolve, &url])
        .output()
        .expect("curl");
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A new, empty database on the server that `GANTRY_TEST_POSTGRES_URL` names
/// (scripts/test starts one), or `None` when that variable is unset.
pub fn fresh_postgres_database() -> Option<String> {
    let base = std::env::var("GANTRY_TEST_POSTGRES_URL").ok()?;
    let name = unique("gantry_e2e").replace('-', "_");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .expect("connect to GANTRY_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
    });
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    Some(format!("{prefix}/{name}"))
}

/// A self-signed certificate for `domain` made with openssl, as the files
/// (cert.pem, key.pem) in `dir`: what a user brings to `certs:add`.
pub fn self_signed_cert(dir: &Path, domain: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", &format!("/CN={domain}")])
        .args(["-addext", &format!("subjectAltName=DNS:{domain}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", stderr(&made));
    (cert, key)
}
