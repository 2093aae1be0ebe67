#[test]
fn starts_and_creates_a_database() {
    if allot_pgtemp::find_bin_dir().is_none() && allot_pgtemp::skip_allowed() {
        eprintln!("SKIPPED: no PostgreSQL on this machine (ALLOT_SKIP_POSTGRES=1)");
        return;
    }
    let c = allot_pgtemp::PgCluster::start(false).expect("cluster starts");
    let url = c.create_database("probe").expect("database");
    assert!(url.ends_with("/probe"));
}
