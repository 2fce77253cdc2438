//! The committed OpenAPI document must equal the one the code generates. To update it:
//! `PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test openapi`.

#[test]
fn committed_openapi_matches_the_code() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(o.status.success());
    let generated = String::from_utf8(o.stdout).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("PADDOCK_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test openapi",
        path.display()
    );
}
