//! Issue 7, deployment files: what CI can check without a Docker engine or a running systemd.
//! The env example names exactly the variables the config reads (and the README documents
//! them), every example in `conf/` passes `--check-config`, the systemd unit passes
//! `systemd-analyze verify` and is hardened, and the Dockerfile has the promised properties.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use ai_gateway::config::{vars, Config};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `VAR=value` and `#VAR=value` lines of an env file: (name, value, commented out).
fn env_lines(text: &str) -> Vec<(String, String, bool)> {
    text.lines()
        .filter_map(|l| {
            let (commented, rest) = match l.strip_prefix('#') {
                Some(r) => (true, r),
                None => (false, l),
            };
            let (name, value) = rest.split_once('=')?;
            let ok = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| {
                    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '<' || c == '>'
                });
            ok.then(|| (name.to_string(), value.to_string(), commented))
        })
        .collect()
}

/// The string values of the `pub const`s in `config::vars` (the names the parser uses).
fn vars_module_names() -> BTreeSet<String> {
    let src = read("src/config/vars.rs");
    src.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("pub const ")?;
            let (_, value) = rest.split_once(": &str = \"")?;
            Some(value.trim_end_matches("\";").to_string())
        })
        .filter(|v| v != vars::PROVIDER_PREFIX)
        .collect()
}

#[test]
fn env_example_names_exactly_the_variables_the_config_reads() {
    let all: BTreeSet<String> = vars::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        all.len(),
        vars::ALL.len(),
        "config::vars::ALL lists a name twice"
    );

    let declared = vars_module_names();
    let missing_from_all: Vec<_> = declared.difference(&all).collect();
    assert!(
        missing_from_all.is_empty(),
        "add these to config::vars::ALL (they are constants in config::vars): {missing_from_all:?}"
    );

    let example = read("conf/ai-gateway.env");
    let listed: BTreeSet<String> = env_lines(&example).into_iter().map(|(n, _, _)| n).collect();
    let not_listed: Vec<_> = all.difference(&listed).collect();
    assert!(
        not_listed.is_empty(),
        "add these to conf/ai-gateway.env, each as `#NAME=default` under a comment saying what it does: {not_listed:?}"
    );
    let unknown: Vec<_> = listed.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "conf/ai-gateway.env names variables the config does not read (remove them, or add them to config::vars and config::vars::ALL): {unknown:?}"
    );
    // Each variable once, and every line in the example commented out: it documents defaults.
    let lines = env_lines(&example);
    assert_eq!(
        lines.len(),
        listed.len(),
        "a variable is listed twice in conf/ai-gateway.env"
    );
    assert!(lines.iter().all(|(_, _, commented)| *commented));

    let readme = read("README.md");
    let undocumented: Vec<_> = all
        .iter()
        .filter(|v| !readme.contains(&format!("`{v}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "add a row for each of these to the configuration table in README.md: {undocumented:?}"
    );
}

#[test]
fn env_example_defaults_are_the_real_defaults() {
    let example = read("conf/ai-gateway.env");
    // Uncomment every line except the `<NAME>` templates.
    let env: HashMap<String, String> = env_lines(&example)
        .into_iter()
        .filter(|(n, _, _)| !n.contains('<'))
        .map(|(n, v, _)| (n, v))
        .collect();
    let shown =
        Config::from_map(&env).unwrap_or_else(|e| panic!("conf/ai-gateway.env defaults: {e}"));
    let real = Config::from_map(&HashMap::new()).unwrap();
    assert_eq!(shown.listen, real.listen);
    assert_eq!(shown.threads, real.threads);
    assert_eq!(shown.max_body_bytes, real.max_body_bytes);
    assert_eq!(shown.connect_timeout, real.connect_timeout);
    assert_eq!(shown.first_byte_timeout, real.first_byte_timeout);
    assert_eq!(shown.idle_timeout, real.idle_timeout);
    assert_eq!(shown.shutdown_grace, real.shutdown_grace);
    assert_eq!(shown.models_cache_ttl, real.models_cache_ttl);
    assert_eq!(shown.echo_chunk_delay, real.echo_chunk_delay);
    assert_eq!(shown.anthropic_max_tokens, real.anthropic_max_tokens);
    assert_eq!(shown.log_level, real.log_level);
    assert_eq!(shown.log_format, real.log_format);
    assert_eq!(shown.metrics_listen, real.metrics_listen);
    assert_eq!(shown.prices, real.prices);
    assert_eq!(shown.upgrade_sock, real.upgrade_sock);
    assert_eq!(shown.pid_file, real.pid_file);
    assert_eq!(shown.default_provider, real.default_provider);
    // The base URLs shown enable their providers with the built-in defaults.
    let p = &shown.providers;
    assert_eq!(
        p["openai"].backends[0].to_string(),
        ai_gateway::config::DEFAULT_OPENAI_BASE_URL
    );
    assert_eq!(p["openai"].default_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        p["anthropic"].backends[0].to_string(),
        ai_gateway::config::DEFAULT_ANTHROPIC_BASE_URL
    );
    assert_eq!(
        p["google"].backends[0].to_string(),
        ai_gateway::config::DEFAULT_GEMINI_BASE_URL
    );
    assert_eq!(
        p["huggingface"].backends[0].to_string(),
        ai_gateway::config::DEFAULT_HF_BASE_URL
    );
}

/// Runs `ai-gateway --check-config` with the active lines of an env file.
fn check_env_file(rel: &str) -> (bool, String) {
    let vars: Vec<(String, String)> = env_lines(&read(rel))
        .into_iter()
        .filter(|(_, _, commented)| !commented)
        .map(|(n, v, _)| (n, v))
        .collect();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let out = common::Gateway::command(&pairs)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_example_in_conf_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("env") {
            continue;
        }
        let rel = format!("conf/{}", path.file_name().unwrap().to_string_lossy());
        let (ok, out) = check_env_file(&rel);
        assert!(ok, "{rel} does not pass --check-config:\n{out}");
        checked += 1;
    }
    assert!(checked >= 2, "conf/ai-gateway.env and conf/sidecar.env");
    let (_, out) = check_env_file("conf/sidecar.env");
    assert!(out.contains("vllm"), "{out}");
    assert!(
        out.contains("http://127.0.0.1:8000/v1, http://127.0.0.1:8001/v1"),
        "{out}"
    );
    assert!(out.contains("ollama"), "{out}");
    assert!(out.contains("default provider vllm"), "{out}");
}

fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_passes_systemd_analyze_verify() {
    let unit = read("conf/ai-gateway.service");
    let one = |k: &str| -> String {
        let v = directive(&unit, k);
        assert_eq!(v.len(), 1, "the unit must set {k}= once");
        v[0].to_string()
    };
    assert_eq!(one("Type"), "forking");
    assert!(one("EnvironmentFile").starts_with('/'));
    assert_eq!(one("DynamicUser"), "yes");
    assert!(
        directive(&unit, "User").is_empty(),
        "no fixed user with DynamicUser"
    );
    assert_eq!(one("Restart"), "on-failure");
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RuntimeDirectory", "ai-gateway"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    // The pid file and the upgrade socket are writable (under RuntimeDirectory=) and the pid file
    // is the one systemd follows.
    let env = directive(&unit, "Environment");
    let pid = env
        .iter()
        .find_map(|e| e.strip_prefix("GATEWAY_PID_FILE="))
        .expect("Environment=GATEWAY_PID_FILE=...");
    let sock = env
        .iter()
        .find_map(|e| e.strip_prefix("GATEWAY_UPGRADE_SOCK="))
        .expect("Environment=GATEWAY_UPGRADE_SOCK=...");
    assert_eq!(one("PIDFile"), pid);
    assert!(pid.starts_with("/run/ai-gateway/") && sock.starts_with("/run/ai-gateway/"));
    assert!(one("ExecStart").ends_with("ai-gateway --daemon"));
    assert!(one("ExecStartPre").ends_with("--check-config"));
    let reload = directive(&unit, "ExecReload");
    assert_eq!(reload.len(), 3, "{reload:?}");
    assert!(reload[0].ends_with("--check-config"));
    assert!(reload[1].contains("--upgrade") && reload[1].contains("--daemon"));
    assert!(reload[2].contains("-QUIT $MAINPID"));
    let stop = ai_gateway::config::parse_duration(&one("TimeoutStopSec")).unwrap();
    assert!(stop > Config::from_map(&HashMap::new()).unwrap().shutdown_grace);

    // systemd-analyze verify, with ExecStart at the binary just built.
    let bin = env!("CARGO_BIN_EXE_ai-gateway");
    let dir = tempfile::tempdir().unwrap();
    let local = unit.replace("/usr/local/bin/ai-gateway", bin).replace(
        "/etc/ai-gateway/ai-gateway.env",
        &root().join("conf/ai-gateway.env").to_string_lossy(),
    );
    let path = dir.path().join("ai-gateway.service");
    std::fs::write(&path, local).unwrap();
    let (ok, out) = systemd_verify(&path);
    assert!(ok, "systemd-analyze verify failed:\n{out}");
    assert!(
        !out.contains("ai-gateway.service"),
        "systemd-analyze verify warns about the unit:\n{out}"
    );
    // The check can fail: an unknown directive is reported.
    let broken = dir.path().join("broken.service");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("ProtectHome=yes", "ProtectHomee=yes"),
    )
    .unwrap();
    let (_, out) = systemd_verify(&broken);
    assert!(out.contains("ProtectHomee"), "{out}");
}

fn systemd_verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package `systemd`; .ci/run installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn dockerfile_is_multi_stage_slim_non_root_with_healthcheck() {
    let df = read("Dockerfile");
    let lines: Vec<&str> = df
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS "), "the build stage is named");
    let last = froms.last().unwrap();
    assert!(last.contains("slim"), "slim runtime image: {last}");
    let runtime = &df[df.rfind("\nFROM ").unwrap()..];
    assert!(
        runtime.contains("ca-certificates"),
        "CA certificates in the runtime image"
    );
    assert!(
        runtime.contains("COPY --from="),
        "the binary comes from the build stage"
    );
    assert!(
        !runtime.contains("cargo "),
        "no toolchain in the runtime image"
    );
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "non-root user: {user}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("HEALTHCHECK ") && df.contains("/health")));
    assert!(df.contains("GATEWAY_LISTEN=0.0.0.0:8080"));
    assert!(lines.iter().any(|l| *l == "EXPOSE 8080"));
    assert!(lines.iter().any(|l| *l == "STOPSIGNAL SIGTERM"));
    assert!(
        lines.iter().any(|l| l.starts_with("ENTRYPOINT [")),
        "exec-form ENTRYPOINT gets the signals"
    );
    // The build context leaves out the multi-gigabyte target/ and the venv.
    let ignore = read(".dockerignore");
    for p in ["target", ".venv", ".git"] {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim().trim_start_matches('/').trim_end_matches('/') == p),
            "{p} in .dockerignore"
        );
    }
}
