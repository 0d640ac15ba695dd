//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver's JSON protocol, spoken with curl): log in with a one-time
//! link, read the deploy history of a real push, click Rollback, and see the
//! older body served through the proxy.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{make_key, path_str, stderr, stdout, Repo, Server};

/// A chromedriver process with one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser
            .call("GET", "/status", None)
            .get("value")
            .and_then(|v| v.get("ready"))
            != Some(&json!(true))
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            }
        }}});
        let session = browser.call("POST", "/session", Some(capabilities));
        let id = session["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-X", method, &format!("{}{path}", self.base)]);
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ]);
        }
        let out = cmd.output().expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn click(&self, css: &str) {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        let element = found["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned();
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.call("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn login_link(server: &Server, key: &crate::support::Key) -> String {
    let out = server.ssh(key, "web:login");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a link")
        .to_owned()
}

#[test]
fn log_in_read_history_and_roll_back_in_chromium() {
    let server = Server::start();
    let app = crate::support::unique("dash");
    let repo = Repo::from_example(&server, "hello-docker");
    assert!(repo.push(&server, &server.admin, &app).status.success());
    repo.write("public/index.html", "second body\n");
    repo.commit(&server, "the second version");
    assert!(repo.push(&server, &server.admin, &app).status.success());
    assert_eq!(server.get(&app).1, "second body\n");

    let browser = Browser::start();
    let dashboard = format!("http://gantry.localhost:{}", server.http_port);
    // Not logged in: the dashboard says how to log in.
    browser.open(&dashboard);
    assert!(
        browser.source().contains("web:login"),
        "{}",
        browser.source()
    );

    browser.open(&login_link(&server, &server.admin));
    let overview = browser.source();
    assert!(
        overview.contains(&app) && overview.contains("running 1/1"),
        "{overview}"
    );

    browser.open(&format!("{dashboard}/apps/{app}/releases"));
    let history = browser.source();
    for needle in [
        "v2",
        "v1",
        "current",
        "the second version",
        "Test Author",
        "tester",
    ] {
        assert!(
            history.contains(needle),
            "history lacks {needle:?}:\n{history}"
        );
    }

    browser.open(&format!("{dashboard}/apps/{app}/releases/v1"));
    assert!(
        browser.source().contains("Build log") && browser.source().contains("-----&gt; Build"),
        "{}",
        browser.source()
    );
    browser.click("#rollback");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !browser.source().contains("Rollback to v1") {
        assert!(
            Instant::now() < deadline,
            "no rollback in history:\n{}",
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get(&app).1, "Hello from gantry\n");
    assert!(
        browser.source().contains("rolled back"),
        "v2 not shown as rolled back:\n{}",
        browser.source()
    );

    // A deployer's login sees only its own apps.
    let deployer = make_key(server.home.path(), "deployer");
    let out = server.cli(&[
        "keys:add",
        "dev",
        path_str(&deployer.public),
        "--apps",
        "otherapp",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    browser.open(&login_link(&server, &deployer));
    let overview = browser.source();
    assert!(
        overview.contains("Apps") && !overview.contains(&app),
        "{overview}"
    );
    browser.open(&format!("{dashboard}/apps/{app}/releases"));
    assert!(
        browser.source().contains("Not found"),
        "{}",
        browser.source()
    );
}

#[test]
fn the_rollback_form_needs_its_csrf_token_and_links_work_once() {
    let server = Server::start();
    let app = crate::support::unique("csrf");
    let repo = Repo::from_example(&server, "hello-docker");
    assert!(repo.push(&server, &server.admin, &app).status.success());
    let link = login_link(&server, &server.admin);
    let resolve = format!("gantry.localhost:{}:127.0.0.1", server.http_port);
    let headers = tempfile::NamedTempFile::new().expect("temp");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            path_str(headers.path()),
            "--resolve",
            &resolve,
            &link,
        ])
        .output()
        .expect("curl");
    assert!(out.status.success());
    let head = std::fs::read_to_string(headers.path()).expect("headers");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    assert!(
        head.contains("HttpOnly") && head.contains("SameSite=Strict"),
        "{head}"
    );
    // The link is spent.
    let again = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &resolve,
            &link,
        ])
        .output()
        .expect("curl");
    assert_eq!(stdout(&again), "403");
    // A POST without the token is refused; the app is untouched.
    let url = format!(
        "http://gantry.localhost:{}/apps/{app}/releases/v1/rollback",
        server.http_port
    );
    let forged = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &resolve,
            "-H",
            &format!("Cookie: {cookie}"),
            "-d",
            "csrf=wrong",
            &url,
        ])
        .output()
        .expect("curl");
    assert_eq!(stdout(&forged), "403");
    let releases = stdout(&server.cli(&["releases", &app]));
    assert_eq!(releases.lines().count(), 2, "{releases}");
}

#[test]
fn a_running_jobs_log_arrives_live_with_its_colors() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let jobs = server.home.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("mkdir");
    let script = jobs.join("live.run");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'first line\\n'\nsleep 3\nprintf '\\033[31msecond line in red\\033[0m\\n'\nsleep 1\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let browser = Browser::start();
    browser.open(&login_link(&server, &server.admin));
    let out = server.cli(&["jobs:run", "live"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = format!("http://gantry.localhost:{}/jobs/live/1", server.http_port);
    // Wait until the run has started and printed its first line, then load the page.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        browser.open(&page);
        let source = browser.source();
        if source.contains("first line") {
            assert!(!source.contains("second line"), "loaded too late: {source}");
            assert!(source.contains("follow.js"), "{source}");
            break;
        }
        assert!(Instant::now() < deadline, "the run never showed: {source}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Without reloading, the red line arrives over Server-Sent Events, and
    // the status turns to succeeded when the run ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let source = browser.source();
        let arrived = source
            .split("<span")
            .skip(1)
            .any(|span| span.contains("second line in red") && span.contains("color"));
        if arrived && source.contains(">succeeded<") {
            break;
        }
        assert!(Instant::now() < deadline, "no live update: {source}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The jobs overview and the run list link to it; the badge says passing.
    browser.open(&format!(
        "http://gantry.localhost:{}/jobs",
        server.http_port
    ));
    let source = browser.source();
    assert!(
        source.contains("href=\"/jobs/live\"") && source.contains("gantry.prune-runs"),
        "{source}"
    );
    let (status, body) =
        crate::support::http_get(server.http_port, "gantry.localhost", "/badge/live.svg");
    assert_eq!(status, 200);
    assert!(body.contains("passing"), "{body}");

    // Run again repeats a run with its parameters.
    let greet = jobs.join("greet.run");
    std::fs::write(&greet, "#!/bin/sh\necho \"hello $WHO\"\n").expect("write");
    std::fs::set_permissions(&greet, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = server.cli(&["jobs:run", "greet", "WHO=ann"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = format!("http://gantry.localhost:{}/jobs/greet/1", server.http_port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        browser.open(&first);
        if browser.source().contains(">succeeded<") {
            break;
        }
        assert!(Instant::now() < deadline, "greet #1 did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.click("#run-again");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.cli(&["jobs:log", "greet", "2"]);
        if crate::support::stdout(&out).contains("hello ann") {
            break;
        }
        assert!(Instant::now() < deadline, "Run again lost the parameters");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_code_its_commits_and_a_releases_diff_show_in_chromium() {
    let server = Server::start();
    let app = crate::support::unique("code");
    let repo = Repo::from_example(&server, "hello-docker");
    repo.write(
        "lib/lines.txt",
        "line one\nline two\nline three\nline four\nline five\n",
    );
    std::fs::write(repo.path().join("logo.bin"), [0u8, 1, 2, 255, 0, 7]).expect("binary");
    repo.commit(&server, "add lines and a logo");
    assert!(repo.push(&server, &server.admin, &app).status.success());
    let head = |repo: &Repo| {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["rev-parse", "HEAD"])
            .output()
            .expect("git");
        stdout(&out).trim().to_owned()
    };
    let first = head(&repo);
    repo.write(
        "lib/lines.txt",
        "line one\nline two\nline THREE changed\nline four\nline five\n",
    );
    repo.commit(&server, "change line three");
    assert!(repo.push(&server, &server.admin, &app).status.success());
    let second = head(&repo);

    let browser = Browser::start();
    let dashboard = format!("http://gantry.localhost:{}", server.http_port);
    browser.open(&login_link(&server, &server.admin));

    // The header links the parts and names the key; the app page links its pages.
    browser.open(&format!("{dashboard}/apps/{app}"));
    let page = browser.source();
    for needle in [
        "href=\"/jobs\"",
        "href=\"/system\"",
        "tester",
        &format!("href=\"/apps/{app}/code\""),
        &format!("href=\"/apps/{app}/commits\""),
        &format!("git clone ssh://git@localhost:{}/{app}", server.ssh_port),
    ] {
        assert!(
            page.contains(needle),
            "the app page lacks {needle:?}:\n{page}"
        );
    }

    // The tree and a file, at the live release's commit, with line numbers.
    browser.open(&format!("{dashboard}/apps/{app}/code"));
    let page = browser.source();
    assert!(
        page.contains("lib/") && page.contains("Dockerfile") && page.contains("v2 (live)"),
        "{page}"
    );
    browser.open(&format!("{dashboard}/apps/{app}/code/lib/lines.txt"));
    let page = browser.source();
    assert!(
        page.contains("line THREE changed") && page.contains("id=\"L3\""),
        "{page}"
    );
    // Another ref: the first commit's file.
    browser.open(&format!(
        "{dashboard}/apps/{app}/code/lib/lines.txt?ref={first}"
    ));
    let page = browser.source();
    assert!(
        page.contains("line three") && !page.contains("THREE"),
        "{page}"
    );
    // A binary file is offered as a download.
    browser.open(&format!("{dashboard}/apps/{app}/code/logo.bin"));
    let page = browser.source();
    assert!(
        page.contains("A binary file") && page.contains("raw=1"),
        "{page}"
    );
    browser.open(&format!("{dashboard}/apps/{app}/code/no/such/file"));
    assert!(browser.source().contains("Not found"));

    // The log, each deployed commit with the release it became.
    browser.open(&format!("{dashboard}/apps/{app}/commits"));
    let page = browser.source();
    assert!(
        page.contains("change line three")
            && page.contains("add lines and a logo")
            && page.contains(&format!("/apps/{app}/releases/v2"))
            && page.contains(&format!("/apps/{app}/releases/v1")),
        "{page}"
    );
    // A commit's page: its message and its diff.
    browser.open(&format!("{dashboard}/apps/{app}/commits/{second}"));
    let page = browser.source();
    assert!(
        page.contains("-line three") && page.contains("+line THREE changed"),
        "{page}"
    );
    // The release page: what changed since the release before.
    browser.open(&format!("{dashboard}/apps/{app}/releases/v2"));
    let page = browser.source();
    assert!(
        page.contains("Changes since v1")
            && page.contains("change line three")
            && page.contains("-line three")
            && page.contains("+line THREE changed")
            && !page.contains("+line four"),
        "{page}"
    );

    // The live log page: requests made after it opened show up in it
    // (busybox httpd logs a line for each answer, -v), without a reload.
    browser.open(&format!("{dashboard}/apps/{app}/logs"));
    std::thread::sleep(Duration::from_secs(1));
    let answered = |source: &str| source.matches("response:200").count();
    let before = answered(&browser.source());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        crate::support::http_get(server.http_port, &format!("{app}.localhost"), "/");
        if answered(&browser.source()) >= before + 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests never reached the log page ({before} before):\n{}",
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The system chart: the parts, what they hold, and links to their pages.
    browser.open(&format!("{dashboard}/system"));
    let page = browser.source();
    for needle in [
        "<svg",
        "Git server",
        "Job log",
        "Build server",
        "Artifact system",
        "Deploy",
        "Proxy",
        "1 repository",
        "2 images",
        "1 of 1 apps live",
        "1 process running",
        "requests/s",
        "href=\"/jobs\"",
    ] {
        assert!(page.contains(needle), "/system lacks {needle:?}:\n{page}");
    }
    // It renders: a real picture, not an empty one.
    let shot = browser.call("GET", "/screenshot", None)["value"]
        .as_str()
        .unwrap_or_default()
        .len();
    assert!(shot > 20_000, "a {shot}-character screenshot");

    // A deployer of another app cannot open this one's code.
    let deployer = make_key(server.home.path(), "deployer");
    let out = server.cli(&[
        "keys:add",
        "dev",
        path_str(&deployer.public),
        "--apps",
        "otherapp",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    browser.open(&login_link(&server, &deployer));
    for page in [
        "code",
        "code/lib/lines.txt",
        "commits",
        &format!("commits/{second}"),
    ] {
        browser.open(&format!("{dashboard}/apps/{app}/{page}"));
        let source = browser.source();
        assert!(
            source.contains("Not found")
                && !source.contains("THREE")
                && !source.contains("lines.txt"),
            "{page}: {source}"
        );
    }
}

#[test]
fn the_metrics_page_graphs_an_apps_traffic_and_marks_its_deploys() {
    let server = Server::start();
    let app = crate::support::unique("graphs");
    let repo = Repo::from_example(&server, "hello-docker");
    assert!(repo.push(&server, &server.admin, &app).status.success());
    for _ in 0..12 {
        let (status, _) =
            crate::support::http_get(server.http_port, &format!("{app}.localhost"), "/");
        assert_eq!(status, 200);
    }
    let browser = Browser::start();
    let dashboard = format!("http://gantry.localhost:{}", server.http_port);
    browser.open(&login_link(&server, &server.admin));
    // serve samples the proxy's counters every 10 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    let page = loop {
        browser.open(&format!("{dashboard}/apps/{app}/metrics"));
        let page = browser.source();
        let counted = page
            .split("<p class=\"summary\">")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if counted >= 12 {
            break page;
        }
        assert!(Instant::now() < deadline, "no traffic counted yet:\n{page}");
        std::thread::sleep(Duration::from_secs(2));
    };
    for needle in [
        "Last hour",
        "Last day",
        "requests per minute",
        "latency, ms",
        "replicas running",
        "memory per process, MB",
        "traffic, kB per minute",
        // The one process's memory line, labelled.
        "web.1\n</text>",
        // The deploy's marker, drawn in the graphs.
        "v1\n</text>",
        "1 deploy(s)",
    ] {
        assert!(
            page.contains(needle),
            "the metrics page lacks {needle:?}:\n{page}"
        );
    }
    assert!(page.matches("<svg").count() >= 10, "{page}");
    // Twelve requests and their answers moved bytes both ways.
    let summary = page
        .split("<p class=\"summary\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default();
    assert!(
        !summary.contains(" 0 B in") && !summary.contains(" 0 B out") && summary.contains(" out"),
        "{summary}"
    );
    let shot = browser.call("GET", "/screenshot", None)["value"]
        .as_str()
        .unwrap_or_default()
        .len();
    assert!(shot > 20_000, "a {shot}-character screenshot");
}
