//! docker-compose.yml cannot run here (no Docker engine): it is checked by reading it. The stack
//! is the server, built from the repo's Dockerfile, and PostgreSQL with a healthcheck it waits on.

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
fn the_server_listens_on_all_interfaces_and_publishes_its_port() {
    let c = compose();
    let server = &c["services"]["server"];
    assert_eq!(env(server, "HOST"), "0.0.0.0");
    let port = env(server, "PORT");
    let published = server["ports"][0].as_str().unwrap();
    assert!(published.ends_with(&format!(":{port}")), "{published}");
    assert!(env(server, "JWT_SECRET").contains("JWT_SECRET"), "the secret comes from the operator");
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
