//! docker-compose.yml cannot run here (no Docker engine): it is checked by reading it. The stack
//! is cluster mode: server replicas built from the repo's Dockerfile behind HAProxy, sharing
//! PostgreSQL and Redis (each with a healthcheck the servers wait on), and Ollama in a profile.

use serde_norway::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml at the repository root");
    serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML")
}

fn env<'a>(service: &'a Value, key: &str) -> &'a str {
    service["environment"][key].as_str().unwrap_or_else(|| panic!("environment.{key} is set"))
}

#[test]
fn postgres_has_a_healthcheck_and_a_volume() {
    let c = compose();
    let pg = &c["services"]["postgres"];
    assert!(pg["image"].as_str().unwrap().starts_with("postgres:"));
    let test: Vec<&str> =
        pg["healthcheck"]["test"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(test.iter().any(|t| t.contains("pg_isready")), "{test:?}");
    let volume = pg["volumes"][0].as_str().unwrap();
    let name = volume.split(':').next().unwrap();
    assert!(c["volumes"].get(name).is_some(), "named volume {name} is declared");
}

#[test]
fn the_server_is_built_from_the_repository_dockerfile() {
    let c = compose();
    let build = &c["services"]["server"]["build"];
    assert_eq!(build["context"].as_str(), Some("."));
    let dockerfile = build["dockerfile"].as_str().unwrap();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + dockerfile).unwrap();
    assert!(text.contains("cargo build --release --locked --bin postchat"));
    assert!(text.contains("COPY migrations"), "migrations are embedded at build time");
    assert!(text.contains("COPY vendor"), "the patched engineioxide is built from vendor/");
    assert!(text.contains("EXPOSE 3000"));
}

#[test]
fn the_server_waits_for_a_healthy_postgres_and_uses_its_credentials() {
    let c = compose();
    let server = &c["services"]["server"];
    let pg = &c["services"]["postgres"];
    assert_eq!(server["depends_on"]["postgres"]["condition"].as_str(), Some("service_healthy"));
    let url = env(server, "DATABASE_URL");
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        env(pg, "POSTGRES_USER"),
        env(pg, "POSTGRES_PASSWORD"),
        env(pg, "POSTGRES_DB")
    );
    assert_eq!(url, expected);
}

#[test]
fn the_replicas_listen_on_all_interfaces_behind_the_balancer() {
    let c = compose();
    let server = &c["services"]["server"];
    assert_eq!(env(server, "HOST"), "0.0.0.0");
    assert!(server["deploy"]["replicas"].as_u64().unwrap() >= 2, "two or more replicas");
    assert!(server.get("ports").is_none(), "replicas publish no port: clients come through the balancer");
    let port = env(server, "PORT");
    assert_eq!(server["expose"][0].as_str(), Some(port));
    let balancer = &c["services"]["balancer"];
    assert!(balancer["image"].as_str().unwrap().starts_with("haproxy:"), "the official HAProxy image");
    assert_eq!(balancer["ports"][0].as_str(), Some("3000:3000"));
    assert!(env(server, "JWT_SECRET").contains("JWT_SECRET"), "the secret comes from the operator");
    let grace: u64 = env(server, "SHUTDOWN_GRACE_SECS").parse().unwrap();
    let stop = server["stop_grace_period"].as_str().unwrap().trim_end_matches('s').parse::<u64>().unwrap();
    assert!(stop > grace, "docker waits longer than the server drains ({stop} s > {grace} s)");
}

#[test]
fn the_replicas_share_redis_and_wait_for_it() {
    let c = compose();
    let server = &c["services"]["server"];
    let redis = &c["services"]["redis"];
    assert!(redis["image"].as_str().unwrap().starts_with("redis:7"), "Redis 7 or later");
    let test: Vec<&str> =
        redis["healthcheck"]["test"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(test.contains(&"ping"), "{test:?}");
    assert_eq!(server["depends_on"]["redis"]["condition"].as_str(), Some("service_healthy"));
    assert_eq!(env(server, "REDIS_URL"), "redis://redis:6379");
}

/// The balancer's config: the replicas by Docker's DNS on the server's port, websockets
/// tunnelled for long, long-polling sticky by cookie, replicas checked on /readyz (a draining
/// one leaves at once), a refused connection retried elsewhere. With HAProxy installed (CI
/// installs it), `haproxy -c` checks the file too.
#[test]
fn the_balancer_routes_websockets_and_sticky_long_polling_to_ready_replicas() {
    let c = compose();
    let balancer = &c["services"]["balancer"];
    let mount = balancer["volumes"][0].as_str().unwrap();
    let (file, target) = mount.split_once(':').unwrap();
    assert!(target.starts_with("/usr/local/etc/haproxy/haproxy.cfg"), "{target}");
    let path = format!("{}/{}", env!("CARGO_MANIFEST_DIR"), file.trim_start_matches("./"));
    let cfg = std::fs::read_to_string(&path).unwrap();
    let port = env(&c["services"]["server"], "PORT");
    let lines: Vec<&str> = cfg.lines().map(str::trim).collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has(&format!("server-template replica 4 server:{port}")), "the replicas by DNS");
    assert!(has("cookie SERVERID insert"), "long-polling sticky by cookie");
    assert!(has("option httpchk GET /readyz"), "replicas checked on /readyz");
    assert!(has("timeout tunnel 1h"), "websockets outlive the HTTP timeouts");
    assert!(has("option redispatch"), "a refused connection goes to another replica");
    assert!(has("bind :3000"));
    assert!(has("nameserver dns 127.0.0.11:53"), "Docker's DNS");
    let proxy = lines.iter().any(|l| l.starts_with("default-server") && l.contains("send-proxy-v2"));
    assert!(proxy, "every connection names its client in a PROXY protocol v2 header");
    if let Some(haproxy) =
        ["/usr/sbin/haproxy", "/usr/bin/haproxy"].iter().find(|p| std::path::Path::new(p).exists())
    {
        let checked = std::process::Command::new(haproxy).args(["-c", "-f", &path]).output().unwrap();
        assert!(checked.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&checked.stderr));
    }
}

/// The replicas trust the balancer, and only it: its fixed address on the stack's network is
/// `TRUSTED_PROXIES`, so per-address limits count clients (the PROXY header names them), not
/// the balancer; no other service can name a client.
#[test]
fn the_replicas_trust_the_balancers_address_and_no_other() {
    let c = compose();
    let address = c["services"]["balancer"]["networks"]["default"]["ipv4_address"].as_str().unwrap();
    assert_eq!(env(&c["services"]["server"], "TRUSTED_PROXIES"), address);
    let subnet = c["networks"]["default"]["ipam"]["config"][0]["subnet"].as_str().unwrap();
    let networks = postchat::domain::Networks::parse(subnet).unwrap();
    assert!(networks.contains(address.parse().unwrap()), "{address} is on the stack's network {subnet}");
}

#[test]
fn ollama_is_a_profile_the_servers_find_by_name() {
    let c = compose();
    let ollama = &c["services"]["ollama"];
    assert!(ollama["image"].as_str().unwrap().starts_with("ollama/ollama"));
    assert_eq!(ollama["profiles"][0].as_str(), Some("ollama"), "only with --profile ollama");
    let volume = ollama["volumes"][0].as_str().unwrap();
    assert!(c["volumes"].get(volume.split(':').next().unwrap()).is_some(), "models are kept");
    let server = &c["services"]["server"];
    assert!(env(server, "OLLAMA_HOST").contains("http://ollama:11434"));
    assert!(env(server, "AI_PROVIDER").contains("AI_PROVIDER"), "the operator picks the provider");
}

/// The image listens on every interface, so it must never start in dev mode (tokens for anyone
/// who asks) by itself: the server refuses dev mode on a non-loopback HOST unless told
/// INSECURE_DEV_MODE_ON_NETWORK, which neither the image nor the stack says.
#[test]
fn neither_the_image_nor_the_stack_runs_dev_mode() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let env_lines: Vec<&str> = dockerfile.lines().filter(|l| l.trim_start().starts_with("ENV ")).collect();
    assert!(env_lines.iter().any(|l| l.contains("HOST=0.0.0.0")), "the image listens on all interfaces");
    for forbidden in ["INSECURE_DEV_MODE_ON_NETWORK", "JWT_SECRET"] {
        assert!(!env_lines.iter().any(|l| l.contains(forbidden)), "the Dockerfile sets {forbidden}");
    }
    let c = compose();
    let server = &c["services"]["server"];
    assert!(server["environment"].get("INSECURE_DEV_MODE_ON_NETWORK").is_none());
    let secret = env(server, "JWT_SECRET");
    assert!(secret.contains(":?"), "compose fails without an operator's JWT_SECRET: {secret}");
}
