//! `strata server`'s flags against etcd 3.4's: defaults, parsing, every check, and member and
//! cluster ids equal to those a real etcd 3.4.23 computed for the same flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use strata_server::config::{
    AutoCompaction, ClusterState, ConfigError, DEV_PORTS, ListenUrl, LogLevel, MetricsLevel,
    Scheme, ServerArgs, ServerConfig, added_member_id, cluster_id, dev_members, member_id,
    read_kvdb_token,
};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn parse(args: &[&str]) -> Result<ServerArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("strata").chain(args.iter().copied())).map(|cli| cli.server)
}

/// A command line with `--data-dir` in a fresh temporary directory, checked.
fn config(dir: &Path, args: &[&str]) -> Result<ServerConfig, ConfigError> {
    let data_dir = dir.join("data");
    let mut full = vec!["--data-dir", data_dir.to_str().expect("utf-8 temp path")];
    full.extend_from_slice(args);
    ServerConfig::from_args(parse(&full).expect("clap accepts the line"))
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// The defaults `etcd --help` prints for the flags Strata shares, copied from etcd 3.4.23
/// (Debian's `etcd-server` package: `apt-get install etcd-server; etcd --help`).
const ETCD_3_4_HELP_DEFAULTS: &[(&str, &str)] = &[
    ("name", "default"),
    ("data-dir", "${name}.etcd"),
    ("snapshot-count", "100000"),
    ("heartbeat-interval", "100"),
    ("election-timeout", "1000"),
    ("listen-peer-urls", "http://localhost:2380"),
    ("listen-client-urls", "http://localhost:2379"),
    ("listen-metrics-urls", ""),
    ("quota-backend-bytes", "0"),
    ("max-txn-ops", "128"),
    ("max-request-bytes", "1572864"),
    ("initial-advertise-peer-urls", "http://localhost:2380"),
    ("initial-cluster", "default=http://localhost:2380"),
    ("initial-cluster-state", "new"),
    ("initial-cluster-token", "etcd-cluster"),
    ("strict-reconfig-check", "true"),
    ("force-new-cluster", "false"),
    ("wal-dir", ""),
    ("debug", "false"),
    ("experimental-warning-apply-duration", "100ms"),
    ("metrics", "basic"),
    ("max-concurrent-streams", "math.MaxUint32"),
    ("grpc-keepalive-min-time", "5s"),
    ("grpc-keepalive-interval", "2h"),
    ("grpc-keepalive-timeout", "20s"),
    ("cors", "*"),
    ("host-whitelist", "*"),
    ("advertise-client-urls", "http://localhost:2379"),
    ("auto-compaction-retention", "0"),
    ("auto-compaction-mode", "periodic"),
    ("experimental-watch-progress-notify-interval", "10m"),
    ("experimental-initial-corrupt-check", "false"),
    ("experimental-corrupt-check-time", "0s"),
    ("cert-file", ""),
    ("key-file", ""),
    ("client-cert-auth", "false"),
    ("auto-tls", "false"),
    ("peer-auto-tls", "false"),
    ("experimental-peer-skip-client-san-verification", "false"),
    ("trusted-ca-file", ""),
    ("peer-cert-file", ""),
    ("peer-key-file", ""),
    ("peer-client-cert-auth", "false"),
    ("peer-trusted-ca-file", ""),
    ("auth-token", "simple"),
    ("auth-token-ttl", "300"),
    ("bcrypt-cost", "10"),
    ("log-level", "info"),
    ("logger", "capnslog"),
    ("log-outputs", "default"),
];

/// `ServerArgs::default()` written as `etcd --help` writes defaults.
fn strata_help_defaults() -> BTreeMap<String, String> {
    let d = ServerArgs::default();
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    };
    let state = match d.initial_cluster_state {
        ClusterState::New => "new",
        ClusterState::Existing => "existing",
    };
    let mode = format!("{:?}", d.auto_compaction_mode).to_lowercase();
    [
        ("name", d.name.clone()),
        (
            "data-dir",
            d.data_dir
                .as_ref()
                .map_or("${name}.etcd".to_owned(), |p| p.display().to_string()),
        ),
        ("snapshot-count", d.snapshot_count.to_string()),
        ("heartbeat-interval", d.heartbeat_interval_ms.to_string()),
        ("election-timeout", d.election_timeout_ms.to_string()),
        ("listen-peer-urls", d.listen_peer_urls.clone()),
        (
            "listen-client-urls",
            d.listen_client_urls
                .clone()
                .unwrap_or("http://localhost:2379".into()),
        ),
        (
            "listen-metrics-urls",
            d.listen_metrics_urls.clone().unwrap_or_default(),
        ),
        ("quota-backend-bytes", d.quota_backend_bytes.to_string()),
        ("max-txn-ops", d.max_txn_ops.to_string()),
        ("max-request-bytes", d.max_request_bytes.to_string()),
        (
            "initial-advertise-peer-urls",
            d.initial_advertise_peer_urls.clone(),
        ),
        (
            "initial-cluster",
            d.initial_cluster
                .clone()
                .unwrap_or(format!("{}={}", d.name, d.initial_advertise_peer_urls)),
        ),
        ("initial-cluster-state", state.to_owned()),
        ("initial-cluster-token", d.initial_cluster_token.clone()),
        ("strict-reconfig-check", d.strict_reconfig_check.to_string()),
        ("force-new-cluster", d.force_new_cluster.to_string()),
        ("wal-dir", path(&d.operation.wal_dir)),
        ("debug", d.operation.debug.to_string()),
        (
            "experimental-warning-apply-duration",
            d.operation.experimental_warning_apply_duration.clone(),
        ),
        (
            "metrics",
            format!("{:?}", d.operation.metrics).to_lowercase(),
        ),
        (
            "max-concurrent-streams",
            if d.grpc.max_concurrent_streams == u32::MAX {
                "math.MaxUint32".to_owned()
            } else {
                d.grpc.max_concurrent_streams.to_string()
            },
        ),
        (
            "grpc-keepalive-min-time",
            d.grpc.grpc_keepalive_min_time.clone(),
        ),
        (
            "grpc-keepalive-interval",
            d.grpc.grpc_keepalive_interval.clone(),
        ),
        (
            "grpc-keepalive-timeout",
            d.grpc.grpc_keepalive_timeout.clone(),
        ),
        ("cors", d.cors.clone()),
        ("host-whitelist", d.host_whitelist.clone()),
        (
            "advertise-client-urls",
            d.advertise_client_urls
                .clone()
                .unwrap_or("http://localhost:2379".into()),
        ),
        (
            "auto-compaction-retention",
            d.auto_compaction_retention.clone(),
        ),
        ("auto-compaction-mode", mode),
        (
            "experimental-watch-progress-notify-interval",
            d.experimental_watch_progress_notify_interval.clone(),
        ),
        (
            "experimental-initial-corrupt-check",
            d.experimental_initial_corrupt_check.to_string(),
        ),
        (
            "experimental-corrupt-check-time",
            d.experimental_corrupt_check_time.clone(),
        ),
        ("cert-file", path(&d.tls.cert_file)),
        ("key-file", path(&d.tls.key_file)),
        ("client-cert-auth", d.tls.client_cert_auth.to_string()),
        ("trusted-ca-file", path(&d.tls.trusted_ca_file)),
        ("peer-cert-file", path(&d.tls.peer_cert_file)),
        ("peer-key-file", path(&d.tls.peer_key_file)),
        (
            "peer-client-cert-auth",
            d.tls.peer_client_cert_auth.to_string(),
        ),
        ("peer-trusted-ca-file", path(&d.tls.peer_trusted_ca_file)),
        ("auto-tls", d.tls.auto_tls.to_string()),
        ("peer-auto-tls", d.tls.peer_auto_tls.to_string()),
        (
            "experimental-peer-skip-client-san-verification",
            d.tls
                .experimental_peer_skip_client_san_verification
                .to_string(),
        ),
        ("auth-token", d.auth_token.clone()),
        ("auth-token-ttl", d.auth_token_ttl.to_string()),
        ("bcrypt-cost", d.bcrypt_cost.to_string()),
        ("log-level", format!("{:?}", d.log_level).to_lowercase()),
        ("logger", format!("{:?}", d.logger).to_lowercase()),
        ("log-outputs", d.log_outputs.clone()),
    ]
    .into_iter()
    .map(|(flag, value)| (flag.to_owned(), value))
    .collect()
}

#[test]
fn every_default_equals_etcd_3_4s() {
    let etcd: BTreeMap<String, String> = ETCD_3_4_HELP_DEFAULTS
        .iter()
        .map(|(flag, value)| ((*flag).to_owned(), (*value).to_owned()))
        .collect();
    assert_eq!(strata_help_defaults(), etcd);
    assert!(
        std::env::vars().all(|(name, _)| !name.starts_with("ETCD_")),
        "an ETCD_* variable is set, which changes clap's defaults"
    );
    assert_eq!(parse(&[]).expect("an empty line"), ServerArgs::default());
    // The one default that is etcd 3.5's, not 3.4's (false): elections with pre-votes.
    assert!(ServerArgs::default().pre_vote);
}

#[test]
fn grpc_connection_flags_take_etcds_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("m").display().to_string();
    let config = |extra: &[&str]| {
        let mut line = vec!["--data-dir", &data];
        line.extend_from_slice(extra);
        ServerConfig::from_args(parse(&line).expect("clap"))
    };
    let defaults = config(&[]).expect("defaults");
    assert_eq!(defaults.grpc.max_concurrent_streams, u32::MAX);
    assert_eq!(
        defaults.grpc.keepalive_interval,
        Some(Duration::from_secs(2 * 3600))
    );
    assert_eq!(defaults.grpc.keepalive_timeout, Duration::from_secs(20));
    assert_eq!(defaults.grpc.keepalive_min_time, Duration::from_secs(5));
    assert!(defaults.pre_vote);
    let set = config(&[
        "--max-concurrent-streams",
        "100",
        "--grpc-keepalive-interval=0",
        "--grpc-keepalive-timeout",
        "3s",
        "--grpc-keepalive-min-time=1m",
        "--pre-vote=false",
    ])
    .expect("set");
    assert_eq!(set.grpc.max_concurrent_streams, 100);
    assert_eq!(set.grpc.keepalive_interval, None, "0 disables the pings");
    assert_eq!(set.grpc.keepalive_timeout, Duration::from_secs(3));
    assert_eq!(set.grpc.keepalive_min_time, Duration::from_secs(60));
    assert!(!set.pre_vote);
    let bad = config(&["--grpc-keepalive-timeout", "20"]).expect_err("no unit");
    assert!(
        bad.to_string().contains("--grpc-keepalive-timeout"),
        "{bad}"
    );
    let negative = config(&["--grpc-keepalive-interval=-1s"]).expect_err("negative");
    assert!(
        negative.to_string().contains("--grpc-keepalive-interval"),
        "{negative}"
    );
    assert!(parse(&["--max-concurrent-streams", "-1"]).is_err());
    assert_eq!(defaults.cors, None, "any origin");
    assert_eq!(config(&["--cors="]).expect("empty").cors, None);
    assert_eq!(
        config(&["--cors", "http://a.example, http://b.example"])
            .expect("two")
            .cors,
        Some(vec![
            "http://a.example".to_owned(),
            "http://b.example".to_owned()
        ])
    );
}

/// When a real etcd is installed (CI's compat step installs 3.4), its `--help` must print the
/// defaults written above: a newer etcd whose defaults moved fails here.
#[test]
fn etcd_help_if_installed_prints_the_recorded_defaults() {
    let Ok(output) = Command::new("etcd").arg("--help").output() else {
        eprintln!("etcd is not installed; the recorded defaults are checked alone");
        return;
    };
    let help = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let mut printed = BTreeMap::new();
    for line in help.lines() {
        if let Some(rest) = line.trim().strip_prefix("--")
            && let Some((flag, value)) = rest.split_once(' ')
        {
            // Strings are quoted ('simple'), numbers not (10).
            printed.insert(flag.to_owned(), value.trim_matches('\'').to_owned());
        }
    }
    for (flag, value) in ETCD_3_4_HELP_DEFAULTS {
        assert_eq!(
            printed.get(*flag).map(String::as_str),
            Some(*value),
            "--{flag}"
        );
    }
}

#[test]
fn long_flags_are_etcds_plus_stratas_own() {
    let mut flags: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .collect();
    flags.sort();
    let mut expected: Vec<String> = ETCD_3_4_HELP_DEFAULTS
        .iter()
        .map(|(f, _)| (*f).to_owned())
        .collect();
    // Strata's own: the Kvdb service's token, the free-space reserve behind NOSPACE, and
    // the runtime's threads (etcd's counterpart is GOMAXPROCS, a variable).
    expected.extend([
        "kvdb-token-file".to_owned(),
        "disk-reserve-bytes".to_owned(),
        "worker-threads".to_owned(),
    ]);
    // etcd's, with 3.5's default (so not in the 3.4 defaults above).
    expected.push("pre-vote".to_owned());
    // etcd's YAML file, named in etcd's usage text rather than its flags.
    expected.push("config-file".to_owned());
    // etcd's, without a default in its help.
    expected.push("peer-cert-allowed-cn".to_owned());
    expected.push("peer-cert-allowed-hostname".to_owned());
    expected.extend(
        [
            "client-crl-file",
            "client-cert-allowed-hostname",
            "peer-crl-file",
            "cipher-suites",
        ]
        .map(str::to_owned),
    );
    // etcd's, taken and ignored (IgnoredArgs).
    expected.extend(
        [
            "enable-v2",
            "experimental-enable-v2v3",
            "enable-pprof",
            "initial-election-tick-advance",
            "max-snapshots",
            "max-wals",
            "backend-batch-interval",
            "backend-batch-limit",
            "experimental-backend-bbolt-freelist-type",
            "experimental-compaction-batch-limit",
            "log-package-levels",
            "discovery-fallback",
            "proxy",
            "proxy-failure-wait",
            "proxy-refresh-interval",
            "proxy-dial-timeout",
            "proxy-write-timeout",
            "proxy-read-timeout",
        ]
        .map(str::to_owned),
    );
    // etcd 3.4's, on by default here (etcd: off), and etcd 3.5's interval for it.
    expected.push("experimental-enable-lease-checkpoint".to_owned());
    expected.push("experimental-lease-checkpoint-interval".to_owned());
    expected.sort();
    assert_eq!(flags, expected);
}

#[test]
fn worker_threads_default_to_the_runtimes_choice_and_must_be_positive() {
    assert_eq!(parse(&[]).expect("an empty line").worker_threads, None);
    let one = parse(&["--worker-threads", "1"]).expect("1 is valid");
    assert_eq!(one.worker_threads.map(std::num::NonZeroUsize::get), Some(1));
    for bad in ["0", "-1", "two"] {
        assert!(
            parse(&["--worker-threads", bad]).is_err(),
            "--worker-threads {bad} was accepted"
        );
    }
}

#[test]
fn the_disk_reserve_defaults_to_256_mib_and_0_turns_it_off() {
    let dir = temp();
    let defaults = config(dir.path(), &[]).expect("the defaults are valid");
    assert_eq!(defaults.disk_reserve_bytes, Some(256 << 20));
    let off = config(dir.path(), &["--disk-reserve-bytes", "0"]).expect("0 is valid");
    assert_eq!(off.disk_reserve_bytes, None);
}

#[test]
fn the_default_line_starts_a_member_like_etcds_default() {
    let dir = temp();
    let config = config(dir.path(), &[]).expect("the defaults are valid");
    assert_eq!(config.name, "default");
    let local = |addr: &str, url: &str| ListenUrl {
        scheme: Scheme::Http,
        addr: addr.parse().expect("an address"),
        url: url.to_owned(),
    };
    assert_eq!(
        config.listen_client_urls,
        [local("127.0.0.1:2379", "http://localhost:2379")]
    );
    assert_eq!(
        config.listen_peer_urls,
        [local("127.0.0.1:2380", "http://localhost:2380")]
    );
    assert_eq!(config.advertise_client_urls, ["http://localhost:2379"]);
    assert_eq!(config.advertise_peer_urls, ["http://localhost:2380"]);
    assert_eq!(config.initial_cluster.len(), 1);
    assert_eq!(config.initial_cluster[0].name, "default");
    assert_eq!(
        config.initial_cluster[0].peer_urls,
        ["http://localhost:2380"]
    );
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert_eq!(config.initial_cluster_token, "etcd-cluster");
    assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(config.election_timeout, Duration::from_millis(1_000));
    assert_eq!(config.snapshot_count, 100_000);
    assert_eq!(config.quota_backend_bytes, Some(2 * 1024 * 1024 * 1024));
    assert_eq!(config.max_request_bytes, 1_572_864);
    assert_eq!(config.max_txn_ops, 128);
    assert_eq!(config.auto_compaction, AutoCompaction::Off);
    assert_eq!(
        (config.client_tls.clone(), config.peer_tls.clone()),
        (None, None)
    );
    assert_eq!(config.kvdb_token_file, None);
    // etcd 3.4.23 run with no flags logged these ids ("local-member-id":"8e9e05c52164694d",
    // "cluster-id":"cdf818194e3a8c32").
    assert_eq!(config.member_id(), 0x8e9e_05c5_2164_694d);
    assert_eq!(config.cluster_id(), 0xcdf8_1819_4e3a_8c32);
}

#[test]
fn name_alone_derives_the_data_dir_and_the_initial_cluster() {
    let dir = temp();
    // An absolute name keeps the derived `${name}.etcd` out of the working directory.
    let name = dir.path().join("m").display().to_string();
    let named = ServerConfig::from_args(parse(&["--name", &name]).expect("valid")).expect("valid");
    assert_eq!(named.data_dir, Path::new(&format!("{name}.etcd")));
    assert!(named.data_dir.is_dir());
    assert_eq!(named.initial_cluster[0].name, name);
    let peers = [
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:1,http://127.0.0.1:2",
    ];
    let two =
        config(dir.path(), &[&["--name", "x"], &peers[..]].concat()).expect("derived from both");
    assert_eq!(
        two.initial_cluster[0].peer_urls,
        ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    );
}

#[test]
fn flags_take_their_value_after_a_space_or_an_equals_sign() {
    let spaced = parse(&[
        "--name",
        "a",
        "--heartbeat-interval",
        "50",
        "--max-txn-ops",
        "7",
    ])
    .expect("valid");
    let equals = parse(&["--name=a", "--heartbeat-interval=50", "--max-txn-ops=7"]).expect("valid");
    assert_eq!(spaced, equals);
    assert_eq!(
        (
            spaced.name.as_str(),
            spaced.heartbeat_interval_ms,
            spaced.max_txn_ops
        ),
        ("a", 50, 7)
    );
}

#[test]
fn boolean_flags_read_as_gos_and_take_no_separate_value() {
    assert!(
        parse(&["--client-cert-auth"])
            .expect("bare")
            .tls
            .client_cert_auth
    );
    for (text, value) in [
        ("true", true),
        ("T", true),
        ("1", true),
        ("false", false),
        ("F", false),
        ("0", false),
    ] {
        let args = parse(&[&format!("--peer-client-cert-auth={text}")]).expect(text);
        assert_eq!(args.tls.peer_client_cert_auth, value, "{text}");
    }
    // A flag that defaults to true is turned off the same way.
    assert!(
        !parse(&["--strict-reconfig-check=false"])
            .expect("off")
            .strict_reconfig_check
    );
    assert!(
        parse(&["--strict-reconfig-check"])
            .expect("bare")
            .strict_reconfig_check
    );
    // As Go's flag package: `--client-cert-auth true` leaves `true` as a stray argument.
    assert!(parse(&["--client-cert-auth", "true"]).is_err());
    assert!(parse(&["--client-cert-auth=yes"]).is_err());
}

#[test]
fn numbers_states_and_modes_are_refused_by_clap_when_malformed() {
    for line in [
        &["--heartbeat-interval", "abc"][..],
        &["--heartbeat-interval=-5"],
        &["--snapshot-count", "1.5"],
        &["--initial-cluster-state", "foo"],
        &["--auto-compaction-mode", "foo"],
        &["--bogus-flag", "1"],
        &["--metrics", "verbose"],
        &["--log-level", "panic"],
    ] {
        let err = parse(line).expect_err(line[0]).to_string();
        assert!(
            err.contains(line[0].split('=').next().expect("a flag")),
            "{line:?}: {err}"
        );
    }
    let states = parse(&[
        "--initial-cluster-state",
        "existing",
        "--auto-compaction-mode",
        "revision",
    ])
    .expect("valid");
    assert_eq!(states.initial_cluster_state, ClusterState::Existing);
    for (text, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        let args = parse(&["--log-level", text]).expect("a level");
        assert_eq!(args.log_level, level, "{text}");
    }
}

#[test]
fn quota_zero_is_two_gib_negative_is_none_and_snapshot_count_zero_is_the_default() {
    let dir = temp();
    let quota = |q: &str| {
        config(dir.path(), &[&format!("--quota-backend-bytes={q}")])
            .expect(q)
            .quota_backend_bytes
    };
    assert_eq!(quota("0"), Some(2 << 30));
    assert_eq!(quota("1024"), Some(1024));
    assert_eq!(quota("-1"), None);
    let negative_spaced =
        parse(&["--quota-backend-bytes", "-1"]).expect("a negative number is a value");
    assert_eq!(negative_spaced.quota_backend_bytes, -1);
    let zero = config(dir.path(), &["--snapshot-count", "0"]).expect("valid");
    assert_eq!(zero.snapshot_count, 100_000);
}

#[test]
fn heartbeat_and_election_checks_are_etcds() {
    let dir = temp();
    let timing = |h: &str, e: &str| {
        config(
            dir.path(),
            &["--heartbeat-interval", h, "--election-timeout", e],
        )
    };
    let ok = timing("100", "500").expect("exactly 5 heartbeats");
    assert_eq!(
        (ok.heartbeat_interval, ok.election_timeout),
        (Duration::from_millis(100), Duration::from_millis(500))
    );
    timing("10000", "50000").expect("the longest election timeout");
    for (h, e, message) in [
        (
            "100",
            "400",
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]",
        ),
        ("0", "1000", "--heartbeat-interval must be >0 (set to 0ms)"),
        ("100", "0", "--election-timeout must be >0 (set to 0ms)"),
        (
            "100",
            "60000",
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (
            "10001",
            "50001",
            "should be at least as 5 times as --heartbeat-interval[10001ms]",
        ),
    ] {
        let err = timing(h, e).expect_err(message).to_string();
        assert!(err.contains(message), "{h}/{e}: {err}");
    }
}

#[test]
fn urls_are_checked_as_etcd_checks_them() {
    let dir = temp();
    for (line, message) in [
        (
            &[
                "--listen-client-urls",
                "ftp://localhost:2379",
                "--advertise-client-urls",
                "http://a:1",
            ][..],
            "scheme",
        ),
        (
            &[
                "--listen-client-urls",
                "http://localhost",
                "--advertise-client-urls",
                "http://a:1",
            ],
            "host:port",
        ),
        (
            &["--listen-peer-urls", "http://localhost:2380/x"],
            "must not contain a path",
        ),
        (
            &["--listen-peer-urls", "http://example.invalid:2380"],
            "expected IP in URL for binding",
        ),
        (
            &["--advertise-client-urls", "http://:2379"],
            "unexpected empty host",
        ),
        (
            &["--listen-client-urls", "http://127.0.0.1:2379"],
            "--advertise-client-urls is required",
        ),
        (
            &["--listen-peer-urls", ","],
            "--listen-peer-urls holds no URL",
        ),
    ] {
        let err = config(dir.path(), line).expect_err(message).to_string();
        assert!(err.contains(message), "{line:?}: {err}");
    }
    // An advertised client URL may name a host: only listen URLs must be addresses.
    let named = config(
        dir.path(),
        &[
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://db1.example:2379",
        ],
    )
    .expect("valid");
    assert_eq!(
        named.listen_client_urls[0].addr,
        "0.0.0.0:2379".parse().expect("an address")
    );
    assert_eq!(named.advertise_client_urls, ["http://db1.example:2379"]);
}

#[test]
fn initial_cluster_must_list_this_member_with_exactly_its_advertised_peer_urls() {
    let dir = temp();
    for (line, message) in [
        (
            &["--initial-cluster", "b=http://localhost:2380"][..],
            "couldn't find local name \"default\"",
        ),
        (
            &["--initial-cluster", "default=http://localhost:2381"],
            "--initial-cluster has default=http://localhost:2381",
        ),
        (
            &["--initial-cluster", "default=http://127.0.0.1:2380"],
            "they must be the same URLs",
        ),
        (
            &[
                "--initial-cluster",
                "default=http://localhost:2380,default=http://localhost:2381",
            ],
            "--initial-advertise-peer-urls is http://localhost:2380",
        ),
        (
            &[
                "--initial-cluster",
                "default=http://localhost:2380,b=http://localhost:2380",
            ],
            "twice",
        ),
        (
            &["--initial-cluster", "default=http://localhost:2380,x"],
            "expected name=url",
        ),
        (
            &[
                "--initial-cluster",
                "default=http://localhost:2380,=http://a:1",
            ],
            "the member name is empty",
        ),
        (
            &[
                "--initial-cluster",
                "default=http://localhost:2380,b=http://b",
            ],
            "host:port",
        ),
        (&["--name", ""], "--name must not be empty"),
    ] {
        let err = config(dir.path(), line).expect_err(message).to_string();
        assert!(err.contains(message), "{line:?}: {err}");
    }
    let two_urls = config(
        dir.path(),
        &[
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2,http://127.0.0.1:1",
            "--initial-cluster",
            "b=http://127.0.0.1:3,default=http://127.0.0.1:1,default=http://127.0.0.1:2",
        ],
    )
    .expect("the same URLs in another order");
    let names: Vec<&str> = two_urls
        .initial_cluster
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["b", "default"]);
    assert_eq!(
        two_urls.local_member().peer_urls,
        ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    );
}

/// Writes a file and returns its path as a string.
fn file(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a test file");
    path.display().to_string()
}

#[test]
fn https_urls_need_tls_files_and_tls_flags_need_each_other() {
    let dir = temp();
    let (cert, key, ca) = (
        file(dir.path(), "c.pem", "c"),
        file(dir.path(), "k.pem", "k"),
        file(dir.path(), "ca.pem", "ca"),
    );
    let https_client = [
        "--listen-client-urls",
        "https://127.0.0.1:2379",
        "--advertise-client-urls",
        "https://127.0.0.1:2379",
    ];
    let https_peer = [
        "--listen-peer-urls",
        "https://127.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "https://127.0.0.1:2380",
    ];
    let missing = dir.path().join("missing.pem").display().to_string();
    for (line, message) in [
        (
            https_client.to_vec(),
            "TLS key/cert (--cert-file, --key-file) must be provided for https://127.0.0.1:2379",
        ),
        (
            https_peer.to_vec(),
            "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided",
        ),
        (vec!["--cert-file", &cert], "--cert-file needs --key-file"),
        (
            vec!["--peer-key-file", &key],
            "--peer-key-file needs --peer-cert-file",
        ),
        (
            vec!["--trusted-ca-file", &ca],
            "--trusted-ca-file needs --cert-file",
        ),
        (
            vec!["--peer-client-cert-auth"],
            "--peer-client-cert-auth needs --peer-cert-file",
        ),
        (
            vec![
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--client-cert-auth",
            ],
            "--client-cert-auth needs --trusted-ca-file",
        ),
        (
            vec!["--cert-file", &cert, "--key-file", &missing],
            "--key-file",
        ),
        (
            [
                &https_peer[..],
                &["--peer-cert-file", &cert, "--peer-key-file", &key],
            ]
            .concat(),
            "--peer-cert-file needs --peer-trusted-ca-file",
        ),
    ] {
        let err = config(dir.path(), &line).expect_err(message).to_string();
        assert!(err.contains(message), "{line:?}: {err}");
    }
    let both = config(
        dir.path(),
        &[
            &https_client[..],
            &https_peer,
            &[
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--trusted-ca-file",
                &ca,
                "--client-cert-auth",
            ],
            &[
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
                "--peer-trusted-ca-file",
                &ca,
            ],
            &["--initial-cluster", "default=https://127.0.0.1:2380"],
        ]
        .concat(),
    )
    .expect("complete TLS on both sides");
    let client = both.client_tls.expect("client TLS");
    assert!(client.client_cert_auth);
    assert_eq!(client.trusted_ca_file.as_deref(), Some(Path::new(&ca)));
    assert_eq!(both.listen_client_urls[0].scheme, Scheme::Https);
    let peer = both.peer_tls.expect("peer TLS");
    assert!(
        !peer.client_cert_auth,
        "etcd's default: --peer-client-cert-auth=false"
    );
    assert_eq!(peer.cert_file, Path::new(&cert));
}

#[test]
fn the_data_dir_is_created_private_and_must_be_a_directory() {
    let dir = temp();
    let nested = dir.path().join("a/b");
    let line = ["--data-dir", nested.to_str().expect("utf-8")];
    let config = ServerConfig::from_args(parse(&line).expect("valid")).expect("created");
    assert!(config.data_dir.is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&nested)
            .expect("created")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
    assert_eq!(
        std::fs::read_dir(&nested).expect("readable").count(),
        0,
        "the probe is removed"
    );
    let not_dir = file(dir.path(), "plain", "");
    let err = ServerConfig::from_args(parse(&["--data-dir", &not_dir]).expect("valid"))
        .expect_err("a file");
    assert!(matches!(err, ConfigError::DataDirNotDir { .. }), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
    let under_file = format!("{not_dir}/sub");
    let err = ServerConfig::from_args(parse(&["--data-dir", &under_file]).expect("valid"))
        .expect_err("under a file");
    assert!(matches!(err, ConfigError::DataDirUnusable { .. }), "{err}");
}

#[test]
fn auto_compaction_flags_are_read_by_mode() {
    let dir = temp();
    let compaction = |mode: &str, retention: &str| {
        config(
            dir.path(),
            &[
                "--auto-compaction-mode",
                mode,
                "--auto-compaction-retention",
                retention,
            ],
        )
        .map(|c| c.auto_compaction)
    };
    assert_eq!(
        compaction("periodic", "1").expect("hours"),
        AutoCompaction::Periodic(Duration::from_secs(3_600))
    );
    assert_eq!(
        compaction("periodic", "30m").expect("duration"),
        AutoCompaction::Periodic(Duration::from_secs(1_800))
    );
    assert_eq!(
        compaction("revision", "1000").expect("count"),
        AutoCompaction::Revision(1_000)
    );
    assert_eq!(
        compaction("revision", "0").expect("off"),
        AutoCompaction::Off
    );
    let err = compaction("periodic", "foo")
        .expect_err("not a duration")
        .to_string();
    assert!(err.contains("--auto-compaction-retention \"foo\""), "{err}");
    assert!(compaction("revision", "1h").is_err());
}

#[test]
fn the_kvdb_token_file_must_hold_a_token() {
    let dir = temp();
    let good = file(dir.path(), "token", "s3cret\n");
    assert_eq!(
        read_kvdb_token(Path::new(&good)).expect("a token"),
        "s3cret"
    );
    let with_token = config(dir.path(), &["--kvdb-token-file", &good]).expect("valid");
    assert_eq!(
        with_token.kvdb_token_file.as_deref(),
        Some(Path::new(&good))
    );
    let empty = file(dir.path(), "empty", " \n");
    let long = file(dir.path(), "long", &"x".repeat(4 * 1024 + 1));
    let missing = dir.path().join("missing").display().to_string();
    for (path, message) in [
        (empty, "holds no token"),
        (long, "longer than 4096 bytes"),
        (missing, "--kvdb-token-file"),
    ] {
        let err = ServerConfig::from_args(parse(&["--kvdb-token-file", &path]).expect("valid"))
            .expect_err(message);
        assert!(err.to_string().contains(message), "{err}");
    }
}

#[test]
fn metrics_urls_are_optional_listen_urls_and_https_needs_the_client_tls_files() {
    let dir = temp();
    assert!(
        config(dir.path(), &[])
            .expect("valid")
            .listen_metrics_urls
            .is_empty()
    );
    let two = config(
        dir.path(),
        &[
            "--listen-metrics-urls",
            "http://127.0.0.1:2381,http://localhost:2382",
        ],
    )
    .expect("valid");
    let addrs: Vec<String> = two
        .listen_metrics_urls
        .iter()
        .map(|u| u.addr.to_string())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:2381", "127.0.0.1:2382"]);
    for (value, message) in [
        ("https://127.0.0.1:2381", "--cert-file"),
        ("http://example.com:2381", "expected IP"),
        ("http://127.0.0.1:2381/metrics", "listen-metrics-urls"),
    ] {
        let err = config(dir.path(), &["--listen-metrics-urls", value]).expect_err(message);
        assert!(err.to_string().contains(message), "{value}: {err}");
    }
}

#[test]
fn the_watch_progress_interval_is_a_go_duration_and_0_keeps_etcds_default() {
    let dir = temp();
    let interval = |args: &[&str]| {
        config(dir.path(), args)
            .map(|c| c.watch_progress_notify_interval)
            .map_err(|e| e.to_string())
    };
    let flag = "--experimental-watch-progress-notify-interval";
    assert_eq!(interval(&[]), Ok(Duration::from_secs(600)));
    assert_eq!(interval(&[flag, "5s"]), Ok(Duration::from_secs(5)));
    assert_eq!(interval(&[flag, "0"]), Ok(Duration::from_secs(600)));
    let bad = interval(&[flag, "5"]).expect_err("no unit");
    assert!(bad.contains(flag) && bad.contains("missing unit"), "{bad}");
    let check = |args: &[&str]| config(dir.path(), args).map(|c| c.corrupt_check_interval);
    let flag = "--experimental-corrupt-check-time";
    assert_eq!(check(&[]).ok(), Some(None));
    assert_eq!(check(&[flag, "0s"]).ok(), Some(None));
    assert_eq!(
        check(&[flag, "90s"]).ok(),
        Some(Some(Duration::from_secs(90)))
    );
    assert!(check(&[flag, "soon"]).is_err());
}

/// The command line kubeadm's static pod manifest gives etcd (kubeadm 1.28 to 1.31, etcd 3.5),
/// with this machine's paths: every flag is taken, with etcd's meaning.
#[test]
fn kubeadms_etcd_command_line_is_taken() {
    let dir = temp();
    let pki = |name: &str| file(dir.path(), name, "pem");
    let (cert, key, ca) = (pki("server.crt"), pki("server.key"), pki("ca.crt"));
    let (peer_cert, peer_key) = (pki("peer.crt"), pki("peer.key"));
    let data = dir.path().join("etcd").display().to_string();
    let line = [
        "--advertise-client-urls=https://10.0.0.1:2379".to_owned(),
        format!("--cert-file={cert}"),
        "--client-cert-auth=true".to_owned(),
        format!("--data-dir={data}"),
        "--experimental-initial-corrupt-check=true".to_owned(),
        "--experimental-watch-progress-notify-interval=5s".to_owned(),
        "--initial-advertise-peer-urls=https://10.0.0.1:2380".to_owned(),
        "--initial-cluster=node1=https://10.0.0.1:2380".to_owned(),
        format!("--key-file={key}"),
        "--listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379".to_owned(),
        "--listen-metrics-urls=http://127.0.0.1:2381".to_owned(),
        "--listen-peer-urls=https://10.0.0.1:2380".to_owned(),
        "--name=node1".to_owned(),
        format!("--peer-cert-file={peer_cert}"),
        "--peer-client-cert-auth=true".to_owned(),
        format!("--peer-key-file={peer_key}"),
        format!("--peer-trusted-ca-file={ca}"),
        "--snapshot-count=10000".to_owned(),
        format!("--trusted-ca-file={ca}"),
    ];
    let words: Vec<&str> = line.iter().map(String::as_str).collect();
    let config = ServerConfig::from_args(parse(&words).expect("clap takes kubeadm's flags"))
        .expect("a valid configuration");
    assert!(config.initial_corrupt_check);
    assert!(config.strict_reconfig_check, "etcd's default");
    assert_eq!(
        config.watch_progress_notify_interval,
        Duration::from_secs(5)
    );
    assert_eq!(config.listen_metrics_urls.len(), 1);
    assert_eq!(config.snapshot_count, 10_000);
}

#[test]
fn log_outputs_are_etcds_targets_each_once() {
    use strata_server::config::{LogOutput, parse_log_outputs};
    assert_eq!(
        parse_log_outputs("default").ok(),
        Some(vec![LogOutput::Stderr])
    );
    assert_eq!(
        parse_log_outputs("stdout,/var/log/strata.log").ok(),
        Some(vec![
            LogOutput::Stdout,
            LogOutput::File("/var/log/strata.log".into())
        ])
    );
    for bad in ["", "stderr,", "stderr,default", "a.log,a.log"] {
        let err = parse_log_outputs(bad).expect_err(bad);
        assert!(err.to_string().starts_with("--log-outputs"), "{bad}: {err}");
    }
    let dir = temp();
    assert!(config(dir.path(), &["--log-outputs", "stdout,stdout"]).is_err());
    assert!(config(dir.path(), &["--logger", "zap", "--log-outputs", "stderr"]).is_ok());
    assert!(parse(&["--logger", "glog"]).is_err());
}

#[test]
fn auth_token_is_simple_or_jwt_with_usable_keys() {
    let dir = temp();
    let simple = config(dir.path(), &[]).expect("valid");
    assert!(simple.auth_token.jwt().is_none());
    let secret = file(dir.path(), "jwt.secret", "a shared secret");
    let jwt = config(
        dir.path(),
        &[
            "--auth-token",
            &format!("jwt,sign-method=HS256,priv-key={secret},ttl=90s"),
        ],
    )
    .expect("valid");
    let jwt = jwt.auth_token.jwt().expect("jwt");
    assert_eq!(jwt.ttl(), std::time::Duration::from_secs(90));
    let missing = dir.path().join("missing.pem").display().to_string();
    for (value, message) in [
        ("opaque".to_owned(), "unknown token type"),
        ("jwt".to_owned(), "sign-method"),
        ("jwt,sign-method=ES512".to_owned(), "ES512"),
        ("jwt,sign-method=RS256".to_owned(), "missing key data"),
        (
            format!("jwt,sign-method=RS256,priv-key={missing}"),
            "priv-key",
        ),
        (
            format!("jwt,sign-method=RS256,priv-key={secret}"),
            "not an RSA private key",
        ),
        (
            format!("jwt,sign-method=HS256,priv-key={secret},ttl=5"),
            "ttl",
        ),
        (
            format!("jwt,sign-method=HS256,priv-key={secret},ttl"),
            "not name=value",
        ),
    ] {
        let err = config(dir.path(), &["--auth-token", &value]).expect_err(message);
        assert!(
            err.to_string().starts_with("--auth-token ") && err.to_string().contains(message),
            "{value}: {err}"
        );
    }
}

// Ids observed from a real etcd 3.4.23 (Debian's etcd-server) started with the flags in each
// comment; `etcdctl member list -w json` printed the member ids and `header.cluster_id`
// (decimal), or etcd's log printed "added member <hex> ... to cluster <hex>".

#[test]
fn member_and_cluster_ids_match_etcd_3_4() {
    // --name a --initial-advertise-peer-urls http://127.0.0.1:23791
    // --initial-cluster a=http://127.0.0.1:23791 --initial-cluster-token tok-a
    let a = member_id(&["http://127.0.0.1:23791".to_owned()], "tok-a");
    assert_eq!(a, 4_328_076_328_456_457_881);
    assert_eq!(cluster_id(&[a]), 8_006_846_321_828_141_704);
    // --name m --initial-cluster-token multi --initial-cluster
    // m=http://127.0.0.1:23792,m=http://127.0.0.1:23791,n=http://127.0.0.1:23793
    let m = member_id(
        &[
            "http://127.0.0.1:23792".to_owned(),
            "http://127.0.0.1:23791".to_owned(),
        ],
        "multi",
    );
    let n = member_id(&["http://127.0.0.1:23793".to_owned()], "multi");
    assert_eq!((m, n), (0xe401_19ed_7b59_25e8, 0x6196_1ad7_10e7_47ba));
    assert_eq!(cluster_id(&[n, m]), 0x80dc_ecbe_28c0_eb09);
    assert_eq!(
        cluster_id(&[m, n]),
        cluster_id(&[n, m]),
        "the order of ids does not matter"
    );
    // `etcdctl member add l1 --learner --peer-urls=http://127.0.0.1:42380` on the cluster of
    // member a, at Unix second 1796383515 (`date +%s` before and after printed the same).
    assert_eq!(
        added_member_id(&["http://127.0.0.1:42380".to_owned()], 1_796_383_515),
        14_218_135_025_695_001_635
    );
}

#[test]
fn dev_members_are_etcds_procfile_cluster() {
    let dir = temp();
    let members = dev_members(dir.path());
    assert_eq!(members.len(), 3);
    assert_eq!(DEV_PORTS, [(2379, 12380), (22379, 22380), (32379, 32380)]);
    let configs: Vec<ServerConfig> = members
        .into_iter()
        .map(|args| ServerConfig::from_args(args).expect("the Procfile's flags are valid"))
        .collect();
    for (i, config) in configs.iter().enumerate() {
        let (client, peer) = DEV_PORTS[i];
        assert_eq!(config.name, format!("infra{}", i + 1));
        assert_eq!(
            config.data_dir,
            dir.path().join(format!("infra{}.etcd", i + 1))
        );
        assert_eq!(
            config.listen_client_urls[0].addr.to_string(),
            format!("127.0.0.1:{client}")
        );
        assert_eq!(
            config.advertise_client_urls,
            [format!("http://127.0.0.1:{client}")]
        );
        assert_eq!(
            config.listen_peer_urls[0].addr.to_string(),
            format!("127.0.0.1:{peer}")
        );
        assert_eq!(config.initial_cluster_token, "etcd-cluster-1");
        assert_eq!(config.initial_cluster_state, ClusterState::New);
        assert_eq!(
            (
                config.heartbeat_interval.as_millis(),
                config.election_timeout.as_millis()
            ),
            (100, 1_000)
        );
    }
    // etcd 3.4.23 started with the Procfile's three command lines; `etcdctl member list -w
    // table` showed these ids and `-w json` cluster_id 17237436991929493444.
    let ids: Vec<u64> = configs.iter().map(ServerConfig::member_id).collect();
    assert_eq!(
        ids,
        [
            0x8211_f1d0_f64f_3269,
            0x91bc_3c39_8fb3_c146,
            0xfd42_2379_fda5_0e48
        ]
    );
    for config in &configs {
        assert_eq!(config.cluster_id(), 17_237_436_991_929_493_444);
    }
}

#[test]
fn operation_flags_take_etcds_values() {
    let dir = temp();
    let config = |extra: &[&str]| config(dir.path(), extra);
    let defaults = config(&[]).expect("defaults").operation;
    assert_eq!(defaults.wal_dir, None);
    assert_eq!(defaults.warning_apply_duration, Duration::from_millis(100));
    assert_eq!(defaults.metrics, MetricsLevel::Basic);
    // etcd's default, the empty path, is none.
    assert_eq!(
        config(&["--wal-dir="]).expect("empty").operation.wal_dir,
        None
    );
    let given = config(&[
        "--wal-dir",
        "/fast/wal",
        "--experimental-warning-apply-duration",
        "1.5s",
        "--metrics",
        "extensive",
    ])
    .expect("given")
    .operation;
    assert_eq!(given.wal_dir.as_deref(), Some(Path::new("/fast/wal")));
    assert_eq!(given.warning_apply_duration, Duration::from_millis(1500));
    assert_eq!(given.metrics, MetricsLevel::Extensive);
    for bad in ["0", "-1s", "soon"] {
        let flag = format!("--experimental-warning-apply-duration={bad}");
        let refused = config(&[&flag]).expect_err("not a positive duration");
        assert!(
            refused
                .to_string()
                .contains("experimental-warning-apply-duration"),
            "{refused}"
        );
    }
    assert!(parse(&["--metrics", "verbose"]).is_err());
    // `--debug` is `--log-level=debug`, whatever that says.
    let level = |line: &[&str]| parse(line).expect("clap").log_level_in_effect();
    assert_eq!(level(&[]), LogLevel::Info);
    assert_eq!(level(&["--debug"]), LogLevel::Debug);
    assert_eq!(
        level(&["--debug=false", "--log-level", "warn"]),
        LogLevel::Warn
    );
    assert_eq!(
        level(&["--log-level", "error", "--debug=true"]),
        LogLevel::Debug
    );
}

#[test]
fn lease_checkpoints_are_on_every_five_minutes_unless_turned_off() {
    let dir = temp();
    let interval = |extra: &[&str]| config(dir.path(), extra).map(|c| c.lease_checkpoint_interval);
    assert_eq!(
        interval(&[]).expect("default"),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        interval(&["--experimental-lease-checkpoint-interval", "1s"]).expect("1s"),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        interval(&["--experimental-enable-lease-checkpoint=false"]).expect("off"),
        None
    );
    for bad in ["500ms", "0", "often"] {
        let refused = interval(&["--experimental-lease-checkpoint-interval", bad])
            .expect_err("shorter than a second, or not a duration");
        assert!(
            refused
                .to_string()
                .contains("experimental-lease-checkpoint-interval"),
            "{refused}"
        );
    }
}

/// etcd's sample configuration file (etcd.conf.yml.sample in etcd 3.4's repository), with a
/// cluster of one, read as the flags it names; the keys Strata takes no flag for, at the
/// values the sample gives them, are ignored with a note each.
const ETCD_SAMPLE_FILE: &str = "
name: 'infra1'
data-dir: /var/lib/etcd-test
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://localhost:2380
listen-client-urls: http://localhost:2379
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://localhost:2380
advertise-client-urls: http://localhost:2379
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster: infra1=http://localhost:2380
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: true
enable-pprof: true
proxy: 'off'
proxy-failure-wait: 5000
proxy-refresh-interval: 30000
proxy-dial-timeout: 1000
proxy-write-timeout: 5000
proxy-read-timeout: 0
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
debug: false
log-package-levels:
log-outputs: [default]
force-new-cluster: false
";

#[test]
fn etcds_sample_config_file_reads_as_its_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("etcd.conf.yml");
    std::fs::write(&path, ETCD_SAMPLE_FILE).expect("write");
    let (args, notes) = ServerArgs::from_config_file(&path).expect("the sample");
    assert_eq!(args.name, "infra1");
    assert_eq!(
        args.data_dir.as_deref(),
        Some(Path::new("/var/lib/etcd-test"))
    );
    assert_eq!(args.snapshot_count, 10_000);
    assert!(!args.strict_reconfig_check);
    assert_eq!(
        args.initial_cluster.as_deref(),
        Some("infra1=http://localhost:2380")
    );
    // Null values leave the defaults.
    assert_eq!(args.operation.wal_dir, None);
    assert_eq!(args.cors, "*");
    // Every key of the sample is a flag of Strata's (its `auto-tls: false` too): nothing is
    // noted as unknown.
    assert!(notes.is_empty(), "{notes:?}");
    assert!(!args.tls.auto_tls && !args.tls.peer_auto_tls);
    // etcd's flags Strata takes and ignores: noted when the member starts.
    let ignored = args.ignored.notes();
    for flag in [
        "--max-snapshots=5 ",
        "--max-wals=5 ",
        "--discovery-fallback=proxy ",
        "--enable-v2=true ",
        "--enable-pprof=true ",
        "--proxy=off ",
        "--proxy-failure-wait=5000 ",
    ] {
        assert!(
            ignored.iter().any(|n| n.starts_with(flag)),
            "{flag} not noted: {ignored:?}"
        );
    }
    // Every flag not in the file is at its default.
    let line = [
        "--name",
        "infra1",
        "--data-dir",
        "/var/lib/etcd-test",
        "--snapshot-count",
        "10000",
        "--strict-reconfig-check=false",
        "--initial-cluster",
        "infra1=http://localhost:2380",
        "--listen-peer-urls",
        "http://localhost:2380",
        "--listen-client-urls",
        "http://localhost:2379",
        "--initial-advertise-peer-urls",
        "http://localhost:2380",
        "--advertise-client-urls",
        "http://localhost:2379",
    ];
    let flags = parse(&line).expect("the same as flags");
    assert_eq!(
        args,
        ServerArgs {
            ignored: args.ignored.clone(),
            ..flags
        }
    );
}

#[test]
fn config_file_sections_lists_and_refusals() {
    let read = |yaml: &str| -> Result<ServerArgs, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yml");
        std::fs::write(&path, yaml).expect("write");
        ServerArgs::from_config_file(&path)
            .map(|(args, _)| args)
            .map_err(|e| e.to_string())
    };
    let tls = read(
        "client-transport-security:\n  cert-file: /c.pem\n  key-file: /c.key\n  \
         client-cert-auth: true\n  trusted-ca-file: /ca.pem\n\
         peer-transport-security:\n  cert-file: /p.pem\n  key-file: /p.key\n  \
         trusted-ca-file: /pca.pem\n  client-cert-auth: true\n\
         log-outputs: [stderr, /var/log/strata.log]\nheartbeat-interval: 50\n",
    )
    .expect("TLS sections");
    assert_eq!(tls.tls.cert_file.as_deref(), Some(Path::new("/c.pem")));
    assert_eq!(tls.tls.key_file.as_deref(), Some(Path::new("/c.key")));
    assert!(tls.tls.client_cert_auth && tls.tls.peer_client_cert_auth);
    assert_eq!(
        tls.tls.trusted_ca_file.as_deref(),
        Some(Path::new("/ca.pem"))
    );
    assert_eq!(tls.tls.peer_cert_file.as_deref(), Some(Path::new("/p.pem")));
    assert_eq!(
        tls.tls.peer_trusted_ca_file.as_deref(),
        Some(Path::new("/pca.pem"))
    );
    assert_eq!(tls.log_outputs, "stderr,/var/log/strata.log");
    assert_eq!(tls.heartbeat_interval_ms, 50);
    assert_eq!(read("").expect("empty"), ServerArgs::default());
    for (yaml, named) in [
        ("data_dir: /x\n", "data_dir"),
        ("discovery: https://discovery.etcd.io/abc\n", "discovery"),
        (
            "client-transport-security:\n  certfile: /c.pem\n",
            "certfile",
        ),
        ("heartbeat-interval: often\n", "heartbeat-interval"),
        ("config-file: /other.yml\n", "config-file"),
        ("name: [a, [b]]\n", "name"),
        ("- name\n", "mapping"),
        ("name: 'unclosed\n", "YAML"),
    ] {
        let refused = read(yaml).expect_err(yaml);
        assert!(refused.contains(named), "{yaml:?}: {refused}");
        assert!(refused.contains("--config-file"), "{refused}");
    }
    let missing = ServerArgs::from_config_file(Path::new("/no/such/file.yml"))
        .expect_err("no file")
        .to_string();
    assert!(missing.contains("/no/such/file.yml"), "{missing}");
}

#[test]
fn etcds_flags_for_what_strata_lacks_are_taken_checked_and_noted() {
    let args = parse(&[
        "--enable-v2",
        "--max-wals",
        "0",
        "--experimental-compaction-batch-limit",
        "500",
        "--proxy",
        "off",
    ])
    .expect("etcd's line");
    assert_eq!(args.ignored.enable_v2, Some(true));
    assert_eq!(
        args.ignored.notes(),
        [
            "--enable-v2=true ignored (etcd's; Strata has no use for it)",
            "--max-wals=0 ignored (etcd's; Strata has no use for it)",
            "--experimental-compaction-batch-limit=500 ignored (etcd's; Strata has no use for it)",
            "--proxy=off ignored (etcd's; Strata has no use for it)",
        ]
    );
    assert!(parse(&[]).expect("none").ignored.notes().is_empty());
    // Checked as etcd checks them: a proxy is refused, as are values of the wrong kind.
    for bad in [
        &["--proxy", "on"][..],
        &["--max-snapshots", "many"],
        &["--enable-pprof=yes"],
        &["--experimental-backend-bbolt-freelist-type", "list"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_host_whitelist_is_any_host_unless_listed() {
    let dir = temp();
    let hosts = |extra: &[&str]| config(dir.path(), extra).expect("config").host_whitelist;
    assert_eq!(hosts(&[]), None);
    assert_eq!(hosts(&["--host-whitelist", ""]), None);
    assert_eq!(hosts(&["--host-whitelist", "a.example,*"]), None);
    assert_eq!(
        hosts(&["--host-whitelist", "A.example, b.example"]),
        Some(vec!["a.example".to_owned(), "b.example".to_owned()])
    );
}

#[test]
fn allowed_peer_names_need_the_peer_trusted_ca() {
    let dir = temp();
    let pki = |name: &str| file(dir.path(), name, "pem");
    let (cert, key, ca) = (pki("peer.crt"), pki("peer.key"), pki("ca.crt"));
    let data = dir.path().join("m").display().to_string();
    let tls = [
        format!("--peer-cert-file={cert}"),
        format!("--peer-key-file={key}"),
        format!("--peer-trusted-ca-file={ca}"),
        format!("--data-dir={data}"),
    ];
    let config = |extra: &[&str]| {
        let mut words: Vec<&str> = tls.iter().map(String::as_str).collect();
        words.extend_from_slice(extra);
        ServerConfig::from_args(parse(&words).expect("clap"))
    };
    let names = |extra: &[&str]| {
        config(extra)
            .expect("valid")
            .peer_tls
            .expect("peer TLS")
            .allowed_names
    };
    assert_eq!(names(&["--peer-client-cert-auth"]), (None, None));
    assert_eq!(
        names(&[
            "--peer-client-cert-auth",
            "--peer-cert-allowed-cn",
            "etcd-peer"
        ]),
        (Some("etcd-peer".to_owned()), None)
    );
    assert_eq!(
        names(&[
            "--peer-client-cert-auth",
            "--peer-cert-allowed-hostname",
            "peers.example",
            "--peer-cert-allowed-cn=",
        ]),
        (None, Some("peers.example".to_owned()))
    );
    // A trusted CA makes peers' certificates required (etcd's rule): the names need no
    // --peer-client-cert-auth, but they need the CA.
    assert_eq!(
        names(&["--peer-cert-allowed-cn", "etcd-peer"]),
        (Some("etcd-peer".to_owned()), None)
    );
    let without_ca = [
        format!("--peer-cert-file={cert}"),
        format!("--peer-key-file={key}"),
        format!("--data-dir={data}"),
        "--peer-cert-allowed-cn=etcd-peer".to_owned(),
    ];
    let refused = |words: &[&str], flag: &str| {
        let e = ServerConfig::from_args(parse(words).expect("clap"))
            .expect_err("no CA to check the certificates with")
            .to_string();
        assert!(
            e.contains(flag) && e.contains("--peer-trusted-ca-file"),
            "{e}"
        );
    };
    let words: Vec<&str> = without_ca.iter().map(String::as_str).collect();
    refused(&words, "--peer-cert-allowed-cn");
    let crl = format!("--peer-crl-file={ca}");
    refused(&[&words[..3], &[crl.as_str()]].concat(), "--peer-crl-file");
}

#[test]
fn revocation_lists_and_allowed_client_names_need_client_certificates() {
    let dir = temp();
    let pki = |name: &str| file(dir.path(), name, "pem");
    let (cert, key, ca, crl) = (pki("c.crt"), pki("c.key"), pki("ca.crt"), pki("c.crl"));
    let with_tls = |extra: &[&str]| {
        let mut words = vec![
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            format!("--peer-trusted-ca-file={ca}"),
        ];
        words.extend(extra.iter().map(|w| (*w).to_owned()));
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        config(dir.path(), &words)
    };
    let refused = |extra: &[&str], given: &str, missing: &str| {
        let e = with_tls(extra).expect_err("refused").to_string();
        assert!(e.contains(given) && e.contains(missing), "{extra:?}: {e}");
    };
    let client_crl = format!("--client-crl-file={crl}");
    let peer_crl = format!("--peer-crl-file={crl}");
    let trusted = format!("--trusted-ca-file={ca}");
    refused(&[&client_crl], "--client-crl-file", "--trusted-ca-file");
    refused(
        &["--client-cert-allowed-hostname=client.example"],
        "--client-cert-allowed-hostname",
        "--trusted-ca-file",
    );
    let missing = format!(
        "--client-crl-file={}",
        dir.path().join("none.crl").display()
    );
    refused(&[&trusted, &missing], "--client-crl-file", "none.crl");
    let ok = with_tls(&[
        &trusted,
        &client_crl,
        "--client-cert-allowed-hostname=client.example",
        &peer_crl,
    ])
    .expect("valid");
    let client = ok.client_tls.expect("client TLS");
    assert_eq!(client.crl_file.as_deref(), Some(Path::new(&crl)));
    assert_eq!(
        client.allowed_names,
        (None, Some("client.example".to_owned()))
    );
    let peer = ok.peer_tls.expect("peer TLS");
    assert_eq!(peer.crl_file.as_deref(), Some(Path::new(&crl)));
}

#[test]
fn cipher_suites_are_gos_names_of_suites_rustls_has() {
    let dir = temp();
    let suites = |suites: &str| config(dir.path(), &["--cipher-suites", suites]);
    let ok =
        suites("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305")
            .expect("valid");
    assert_eq!(
        ok.cipher_suites,
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        ]
    );
    assert!(suites("").expect("empty").cipher_suites.is_empty());
    let cbc = suites("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
        .expect_err("rustls has no CBC")
        .to_string();
    assert!(
        cbc.contains("--cipher-suites") && cbc.contains("not implemented by rustls"),
        "{cbc}"
    );
    let typo = suites("TLS_ECDHE_RSA_AES_128")
        .expect_err("a typo")
        .to_string();
    assert!(typo.contains("is not a TLS cipher suite"), "{typo}");
}
