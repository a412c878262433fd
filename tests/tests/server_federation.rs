//! Federation: a global Prometheus with the shipped `config/server/global/prometheus.yml`
//! federates a site Prometheus (the shipped site configuration) that scrapes a real
//! agent. The node's series and its alert state arrive with their node label and the
//! site's label. Timings compressed to 1 s (see `nodewatch_tests::server`).

mod common;

use std::time::Duration;

use common::{agent_fixture_args, strs};
use nodewatch_tests::server::{compress_prometheus_timings, copy_dir, server_dir, site_scraping};
use nodewatch_tests::{Agent, Prometheus, fixture};

#[test]
fn global_prometheus_federates_a_site() {
    let work = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&strs(&agent_fixture_args(
        &fixture("pi"),
        &fixture("textfile"),
    )))
    .expect("agent");
    let (_site, site_prometheus) =
        site_scraping(&agent.address, "pi-01", &work.path().join("site-tsdb")).expect("site");

    let global_dir = work.path().join("global");
    copy_dir(&server_dir().join("global"), &global_dir).expect("copy");
    let config = global_dir.join("prometheus.yml");
    compress_prometheus_timings(&config).expect("compress timings");
    std::fs::write(
        global_dir.join("targets/sites.yml"),
        format!(
            "- targets: [\"{}\"]\n  labels:\n    site: north\n",
            site_prometheus.address
        ),
    )
    .expect("targets");
    let global = Prometheus::start_site(&config, &work.path().join("global-tsdb"), &[])
        .expect("global prometheus");

    let timeout = Duration::from_secs(40);
    let load = global
        .wait_for(
            r#"node_load1{job="node",node="pi-01",site="north"}"#,
            timeout,
        )
        .expect("the node's series at the global Prometheus");
    assert_eq!(load.len(), 1, "{load:?}");
    assert_eq!(
        load[0].0["instance"].as_str(),
        Some(agent.address.as_str()),
        "the site's instance label is kept"
    );
    let site_value = site_prometheus
        .query(r#"node_load1{node="pi-01"}"#)
        .expect("site query");
    assert_eq!(site_value[0].1, load[0].1, "same value on both sides");
    // The site's alert state crosses too (the Pi fixture is under-voltage).
    global
        .wait_for(
            r#"ALERTS{alertname="UnderVoltage",alertstate="firing",node="pi-01",site="north"}"#,
            timeout,
        )
        .expect("the site's alert at the global Prometheus");
    // Only the matched jobs cross: the site's self-scrape does not.
    assert!(
        global
            .query(r#"{job="prometheus"}"#)
            .expect("query")
            .is_empty()
    );
}
