//! Buildpack builds, with the real stack image (debootstrap'd once per run),
//! the real builder container and real git pushes: the built-in python and
//! static buildpacks, a custom buildpack from a local git repository, the
//! build cache, and the ways a buildpack build fails.

use crate::support::{
    ensure_stack, http_get_with_headers, path_str, root, stderr, stdout, Repo, Server,
};

#[test]
fn python_app_builds_runs_and_reuses_its_dependency_cache() {
    ensure_stack();
    let server = Server::start();
    let app = crate::support::unique("py");
    let repo = Repo::from_example(&server, "python-hello");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "-----> Python app detected (buildpack: python)",
        "the standard library only",
        "web: python3 app.py",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    let (status, body) = server.get(&app);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello from Python 3."), "{body}");

    // A dependency (a vendored wheel, so no index is needed) is installed...
    std::fs::create_dir_all(repo.path().join("vendor")).expect("mkdir");
    std::fs::copy(
        root().join("tests/fixtures/greeting-1.0-py3-none-any.whl"),
        repo.path().join("vendor/greeting-1.0-py3-none-any.whl"),
    )
    .expect("copy wheel");
    repo.write(
        "requirements.txt",
        "./vendor/greeting-1.0-py3-none-any.whl\n",
    );
    repo.commit(&server, "add a dependency");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Installing dependencies from requirements.txt with pip")
            && err.contains("Successfully installed greeting-1.0"),
        "{err}"
    );
    let out = server.cli(&[
        "run",
        &app,
        "--",
        "python3",
        "-c",
        "import greeting; print(greeting.greet('gantry'))",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Hello, gantry (from greeting)\n");

    // ...and a push with the same requirements reuses it without pip.
    repo.write(
        "app.py",
        &std::fs::read_to_string(repo.path().join("app.py"))
            .expect("read")
            .replace("from Python", "again from Python"),
    );
    repo.commit(&server, "change the code only");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "requirements.txt unchanged since the last build: reusing the cached virtualenv"
        ),
        "{err}"
    );
    assert!(!err.contains("Installing dependencies"), "{err}");
    assert!(server.get(&app).1.starts_with("Hello again from Python"));
    let out = server.cli(&["run", &app, "--", "python3", "-c", "import greeting"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Destroying the app removes its build cache too.
    let volume = format!("gantry-cache-{app}");
    assert!(docker(&["volume", "inspect", &volume]).status.success());
    let out = server.cli(&["apps:destroy", &app, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!docker(&["volume", "inspect", &volume]).status.success());
}

#[test]
fn static_site_is_served_with_types_and_index_files_and_no_listings() {
    ensure_stack();
    let server = Server::start();
    let app = crate::support::unique("site");
    let repo = Repo::from_example(&server, "static-site");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("-----> Static app detected (buildpack: static)"),
        "{err}"
    );
    let host = format!("{app}.localhost");
    let get = |path: &str| http_get_with_headers(server.http_port, &host, path);
    for (path, kind, needle) in [
        ("/", "text/html; charset=utf-8", "<h1>A static site</h1>"),
        ("/docs/", "text/html; charset=utf-8", "Docs index"),
        ("/css/site.css", "text/css; charset=utf-8", "font-family"),
        ("/app.js", "text/javascript; charset=utf-8", "dataset.ready"),
        ("/assets/logo.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, headers, body) = get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some(kind),
            "{path}"
        );
        assert!(body.contains(needle), "{path}: {body}");
    }
    let (status, headers, _) = get("/docs");
    assert_eq!(status, 301);
    assert!(headers["location"].ends_with("/docs/"), "{headers:?}");
    // No directory listing, no dot files, nothing outside public/.
    for path in [
        "/assets/",
        "/.static/serve.py",
        "/../README.md",
        "/missing.html",
    ] {
        let (status, _, body) = get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("logo.svg"),
            "{path} listed a directory: {body}"
        );
    }
}

/// A buildpack in a local git repository: v1 (tagged) and a later main.
fn custom_buildpack(server: &Server) -> Repo {
    let repo = Repo::with_files(
        server,
        &[
            (
                "bin/detect",
                "#!/bin/sh\n[ -f \"$1/greeting.src\" ] && echo Greeting\n",
            ),
            (
                "bin/compile",
                "#!/bin/sh\nset -e\necho \"-----> Greeting buildpack v1\"\n\
                 n=$(cat \"$2/count\" 2>/dev/null || echo 0); n=$((n + 1)); echo $n >\"$2/count\"\n\
                 echo \"       build number $n of this cache\"\n\
                 if [ -f \"$3/FAIL_BUILD\" ]; then echo 'compiler exploded' >&2; exit 1; fi\n\
                 mkdir -p \"$1/www\"\n\
                 echo \"$(cat \"$1/greeting.src\"), $(cat \"$3/NAME\")\" >\"$1/www/index.html\"\n",
            ),
            (
                "bin/release",
                "#!/bin/sh\necho '---'\necho 'default_process_types:'\n\
                 echo '  web: cd /app/www && exec python3 -m http.server \"$PORT\"'\n",
            ),
        ],
    );
    let tag = server.git(&server.admin, repo.path(), &["tag", "v1"]);
    assert!(tag.status.success(), "{}", stderr(&tag));
    let compile = std::fs::read_to_string(repo.path().join("bin/compile")).expect("read");
    repo.write(
        "bin/compile",
        &compile.replace("buildpack v1", "buildpack v2 (main)"),
    );
    repo.commit(server, "v2");
    repo
}

#[test]
fn custom_buildpack_from_a_git_url_with_env_dir_cache_and_ref() {
    ensure_stack();
    let server = Server::start();
    let app = crate::support::unique("custom");
    let buildpack = custom_buildpack(&server);
    let url = format!("{}#v1", path_str(buildpack.path()));
    let out = server.cli(&["apps:create", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    let buildpack_url = format!("BUILDPACK_URL={url}");
    let out = server.cli(&["config:set", &app, &buildpack_url, "NAME=gantry"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The tree would be a Python app to detection; BUILDPACK_URL wins.
    let repo = Repo::with_files(
        &server,
        &[("greeting.src", "Howdy"), ("tool.py", "print(1)\n")],
    );
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let fetching = format!("-----> Fetching buildpack {url}");
    for needle in [
        fetching.as_str(),
        "-----> Greeting app detected",
        "-----> Greeting buildpack v1",
        "build number 1 of this cache",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("v2 (main)"), "{err}");
    assert_eq!(server.get(&app), (200, "Howdy, gantry\n".to_string()));

    // The cache persists between builds.
    repo.write("greeting.src", "Hello");
    repo.commit(&server, "hello");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("build number 2 of this cache"), "{err}");
    assert_eq!(server.get(&app), (200, "Hello, gantry\n".to_string()));

    // A failing compile rejects the push with its output; the old release serves.
    let out = server.cli(&["config:set", &app, "FAIL_BUILD=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    repo.write("greeting.src", "Broken");
    repo.commit(&server, "broken");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("compiler exploded"), "{err}");
    assert!(err.contains("the buildpack's compile step failed"), "{err}");
    assert_eq!(server.get(&app), (200, "Hello, gantry\n".to_string()));

    // Without BUILDPACK_URL, a .buildpacks file picks them (here main, then
    // the built-in static buildpack serving what it compiled).
    let out = server.cli(&["config:unset", &app, "BUILDPACK_URL", "FAIL_BUILD"]);
    assert!(out.status.success(), "{}", stderr(&out));
    repo.write(
        ".buildpacks",
        &format!("# custom first\n{}\n", path_str(buildpack.path())),
    );
    repo.commit(&server, "dot buildpacks");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("-----> Greeting buildpack v2 (main)"), "{err}");
    assert_eq!(server.get(&app), (200, "Broken, gantry\n".to_string()));
}

#[test]
fn buildpack_builds_fail_clearly_and_dockerfile_wins_unless_told() {
    ensure_stack();
    let mut server = Server::start();

    // Nothing any built-in buildpack recognizes.
    let app = crate::support::unique("nothing");
    let repo = Repo::with_files(
        &server,
        &[("README.md", "just words\n"), ("main.go", "package main\n")],
    );
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "no buildpack detected: looked for requirements.txt, pyproject.toml, Pipfile, \
             runtime.txt, .python-version or *.py (python), package.json (node), go.mod (go), \
             index.html or public/index.html (static), a Procfile (procfile)"
        ),
        "{err}"
    );
    assert_eq!(server.get(&app).0, 404);

    // A tree with a Dockerfile and an index.html builds with the Dockerfile,
    // unless GANTRY_BUILDER=buildpack.
    let app = crate::support::unique("both");
    let repo = Repo::from_example(&server, "hello-docker");
    repo.write("public/index.html", "from the Dockerfile\n");
    repo.commit(&server, "both");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("-----> Build: Dockerfile"), "{err}");
    assert_eq!(server.get(&app), (200, "from the Dockerfile\n".to_string()));
    let out = server.cli(&["config:set", &app, "GANTRY_BUILDER=buildpack"]);
    assert!(out.status.success(), "{}", stderr(&out));
    repo.write("public/index.html", "from the static buildpack\n");
    repo.commit(&server, "buildpack please");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("-----> Build: buildpacks") && err.contains("Static app detected"),
        "{err}"
    );
    assert_eq!(
        server.get(&app),
        (200, "from the static buildpack\n".to_string())
    );

    // A procfile-only app runs its commands as written on the stack.
    let app = crate::support::unique("procs");
    let repo = Repo::with_files(
        &server,
        &[("Procfile", "web: mkdir -p /tmp/w && echo procfile app >/tmp/w/index.html && cd /tmp/w && exec python3 -m http.server \"$PORT\"\n")],
    );
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Procfile app detected (buildpack: procfile)"),
        "{err}"
    );
    assert_eq!(server.get(&app), (200, "procfile app\n".to_string()));

    // A configured stack image that is not there is named, never pulled.
    server.stop();
    let toml = server.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str("stack_image = \"gantry-test/no-such-stack:1\"\n");
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();
    repo.write("Procfile", "web: exec python3 -m http.server \"$PORT\"\n");
    repo.commit(&server, "again");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the stack image gantry-test/no-such-stack:1 is not in the Docker engine, and gantry never pulls"),
        "{err}"
    );
    assert_eq!(server.get(&app), (200, "procfile app\n".to_string()));
}

fn docker(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker")
}
