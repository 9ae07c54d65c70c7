//! The vendored engineioxide (vendor/README.md) is the one built: Cargo only warns when a
//! `[patch]` stops matching the crate graph, and would then build the registry copy, with its
//! larger per-connection queue, without a word.

/// The `[[package]]` entries of Cargo.lock named `name`, as text.
fn lock_entries(name: &str) -> Vec<String> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    lock.split("[[package]]")
        .filter(|entry| entry.lines().any(|line| line.trim() == format!("name = \"{name}\"")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn engineioxide_is_built_from_vendor_not_from_the_registry() {
    let entries = lock_entries("engineioxide");
    assert_eq!(entries.len(), 1, "one engineioxide in the build: {entries:?}");
    assert!(
        !entries[0].contains("source ="),
        "engineioxide comes from a registry, not from vendor/ (the [patch] no longer applies?): {}",
        entries[0]
    );
    let vendored =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/vendor/engineioxide/Cargo.toml"))
            .unwrap();
    let version = entries[0].lines().find_map(|line| line.trim().strip_prefix("version = ")).unwrap();
    assert!(vendored.contains(&format!("version = {version}")), "the locked version is the vendored one");
}

#[test]
fn the_vendored_queue_holds_boxed_packets() {
    let socket =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/vendor/engineioxide/src/socket.rs"))
            .unwrap();
    assert!(
        socket.contains("internal_tx: mpsc::Sender<Box<PacketBuf>>"),
        "the patch (vendor/engineioxide.patch) is applied"
    );
}

#[test]
fn the_vendored_websocket_task_opens_the_connection_boxed() {
    let ws = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/vendor/engineioxide/src/transport/ws.rs"
    ))
    .unwrap();
    assert!(
        ws.contains("let opening = Box::pin(async move {") && ws.contains("async fn serve<"),
        "the patch (vendor/engineioxide.patch) is applied: the upgrade and handshake are boxed"
    );
}

#[test]
fn the_vendored_connection_tasks_keep_no_room_for_what_they_no_longer_hold() {
    let read = |file: &str| {
        std::fs::read_to_string(format!("{}/vendor/engineioxide/src/{file}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    };
    let (socket, ws) = (read("socket.rs"), read("transport/ws.rs"));
    assert!(
        socket.contains(".with_cancellation_token_owned(cancellation_token)")
            && !socket.contains("run_until_cancelled_owned("),
        "the patch (vendor/engineioxide.patch) is applied: the heartbeat holds its job once"
    );
    assert!(
        ws.contains("(engine, socket, ws.split())") && ws.contains("fn ws_message("),
        "the patch is applied: the websocket is split before it is served, the writer awaits the sink in one place"
    );
}

/// `vendor/engineioxide.patch` is what the vendored sources carry: it comes off them whole
/// (reversed, every hunk matches), so the file an upgrade reapplies is the current one.
#[test]
fn the_patch_file_matches_the_vendored_sources() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("vendored-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("engineioxide")).unwrap();
    let copied = std::process::Command::new("cp")
        .args(["-r", &format!("{root}/vendor/engineioxide/src")])
        .arg(dir.join("engineioxide"))
        .status()
        .unwrap();
    assert!(copied.success());
    let reversed = std::process::Command::new("patch")
        .args(["-R", "-p0", "--dry-run", "-s", "-i", &format!("{root}/vendor/engineioxide.patch")])
        .current_dir(&dir)
        .output()
        .expect("patch (Debian's package of that name) runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        reversed.status.success(),
        "vendor/engineioxide.patch does not come off the vendored sources: {}",
        String::from_utf8_lossy(&reversed.stdout)
    );
}
