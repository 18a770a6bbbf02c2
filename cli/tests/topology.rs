//! `showrunner topology`, the deploy step's broker half: it declares every exchange and queue in
//! an empty vhost, again without harm, and fails (exit 1, one line) for a user that may not
//! configure them; such a user's processes find the topology missing before it ran and verify
//! it after. Against the real RabbitMQ, in a vhost and with a user of its own.

use std::process::Command;
use std::time::Duration;

use showrunner_shared::broker::{self, BrokerError, topology};
use uuid::Uuid;

const SHOWRUNNER: &str = env!("CARGO_BIN_EXE_showrunner");

mod common;
use common::{MANAGEMENT, clean_up, delete_vhost_and_user, management_put};

/// A vhost and a user of this test, removed on drop.
struct Vhost {
    name: String,
}

impl Vhost {
    async fn queues(&self) -> Vec<String> {
        let queues: serde_json::Value = showrunner_shared::tls::client()
            .get(format!("{MANAGEMENT}/api/queues/{}", self.name))
            .basic_auth("guest", Some("guest"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("list queues")
            .json()
            .await
            .expect("JSON");
        let mut names: Vec<String> = queues
            .as_array()
            .map(|all| all.iter().filter_map(|q| q["name"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let name = self.name.clone();
        clean_up(move || async move { delete_vhost_and_user(&name).await });
    }
}

fn run_topology(amqp_url: &str) -> std::process::Output {
    Command::new(SHOWRUNNER)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHOWRUNNER__AMQP__URL", amqp_url)
        .env("SHOWRUNNER__AMQP__PARTITIONS", "4")
        .arg("topology")
        .output()
        .expect("run showrunner topology")
}

#[tokio::test]
async fn topology_declares_everything_once_and_refuses_a_user_without_configure_rights() {
    let vhost = Vhost { name: format!("sr_test_{}", Uuid::now_v7().simple()) };
    management_put(&format!("vhosts/{}", vhost.name), serde_json::json!({})).await;
    management_put(
        &format!("permissions/{}/guest", vhost.name),
        serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await;

    // A role's user: no configure rights.
    let password = format!("topology-PW-{}", Uuid::now_v7().simple());
    management_put(
        &format!("users/{}", vhost.name),
        serde_json::json!({"password": password, "tags": ""}),
    )
    .await;
    management_put(
        &format!("permissions/{0}/{0}", vhost.name),
        serde_json::json!({"configure": "^$", "write": "^showrunner\\.events$", "read": "^$"}),
    )
    .await;
    let role_url = format!("amqp://{0}:{password}@127.0.0.1:5672/{0}", vhost.name);
    let settings = showrunner_shared::config::Settings::with_overrides(&[
        ("amqp.url", role_url.as_str()),
        ("amqp.partitions", "4"),
    ])
    .expect("settings");
    let verify = || async {
        let conn = broker::connect(&role_url, "test").await.expect("the role user connects");
        let result = topology::declare_or_verify(&conn, &settings.amqp).await;
        let _ = conn.close(200, "done".into()).await;
        result
    };
    // Before the deploy step: it may not declare, and says what is missing.
    match verify().await {
        Err(error @ BrokerError::TopologyMissing { .. }) => {
            assert!(error.to_string().contains("showrunner topology"), "{error}");
        }
        other => panic!("expected the topology to be missing, got {other:?}"),
    }

    let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.name);
    for run in ["first", "second"] {
        let out = run_topology(&url);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{run} run: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("topology declared (4 command partitions)"), "{stdout}");
    }
    let queues = vhost.queues().await;
    // 4 partitions, the event log and the jobs queue, each with its parking lot, and the 18
    // delay tiers (the notification worker reads the event log: no queue of its own).
    assert_eq!(queues.len(), 4 * 2 + 2 * 2 + 18, "{queues:?}");
    assert!(!queues.iter().any(|q| q == "showrunner.notifications"), "{queues:?}");
    for queue in ["showrunner.commands.p003", "showrunner.jobs.parked", "showrunner.eventlog"] {
        assert!(queues.iter().any(|q| q == queue), "{queue} missing: {queues:?}");
    }

    // After it: the role user verifies, without declaring anything.
    assert_eq!(verify().await.expect("verified"), topology::Setup::Verified);

    // `showrunner topology` with the role's user: refused, exit 1, no password in the line.
    let out = run_topology(&role_url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ACCESS_REFUSED") || stderr.contains("ACCESSREFUSED"), "{stderr}");
    assert!(!stderr.contains(&password), "the password leaked: {stderr}");
}
