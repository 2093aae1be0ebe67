#[test]
fn starts_and_creates_a_database() {
    if allot_pgtemp::find_bin_dir().is_none() && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("SKIPPED: no PostgreSQL on this machine (CI=true makes this a failure)");
        return;
    }
    let c = allot_pgtemp::PgCluster::start(false).expect("cluster starts");
    let url = c.create_database("probe").expect("database");
    assert!(url.ends_with("/probe"));
}
