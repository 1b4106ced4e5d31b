//! Command states reach the live hub on every path: queued for a device that polls (CoAP),
//! handed to it, answered; and only streams watching the device see them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use wulian_broker::{Broker, BrokerConfig};
use wulian_ingest::{
    CommandRequest, CommandService, DeviceAuthenticator, LiveEvent, LiveRecv, LiveSubscription,
    Pipeline,
};
use wulian_registry::Registry;
use wulian_tsdb::Tsdb;

async fn next_command(sub: &mut LiveSubscription) -> wulian_registry::Command {
    match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
        Ok(Some(LiveRecv::Event(event))) => match &*event {
            LiveEvent::Command { command, .. } => command.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("no command event: {other:?}"),
    }
}

#[tokio::test]
async fn a_polled_command_is_seen_queued_sent_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("registry.sqlite")).unwrap();
    registry.bootstrap().unwrap();
    for id in ["nb-1", "nb-2"] {
        let new = serde_json::from_value(serde_json::json!({"id": id})).unwrap();
        registry.create_device("default", &new).unwrap();
    }
    let registry = Arc::new(registry);
    let tsdb = Tsdb::open(wulian_tsdb::Config::new(dir.path().join("tsdb"))).unwrap();
    let pipeline = Pipeline::new(tsdb);
    let broker = Broker::new(
        BrokerConfig::default(),
        DeviceAuthenticator::new(Arc::clone(&registry)),
        pipeline.clone(),
    );
    let commands = CommandService::new(Arc::clone(&registry), broker);
    pipeline.attach_commands(Arc::clone(&commands));

    let live = pipeline.live();
    let mut watching = live
        .subscribe("default", HashSet::from(["nb-1".to_string()]), false)
        .unwrap();
    let mut other = live
        .subscribe("default", HashSet::from(["nb-2".to_string()]), true)
        .unwrap();

    commands.note_poller("default", "nb-1");
    let request = CommandRequest {
        name: "reboot".to_string(),
        params: serde_json::json!({"delay_s": 1}),
        timeout: Duration::from_secs(5),
    };
    let sent = commands.send("default", "nb-1", request).await.unwrap();
    let queued = next_command(&mut watching).await;
    assert_eq!(
        (queued.id.as_str(), queued.status.as_str()),
        (sent.command.id.as_str(), "pending")
    );

    let taken = commands
        .take_for_device("default", "nb-1", 1024, 1024)
        .await;
    assert_eq!(taken.len(), 1);
    assert_eq!(next_command(&mut watching).await.status.as_str(), "sent");

    let answer = serde_json::json!({"id": sent.command.id, "result": {"rebooting": true}});
    assert!(commands.resolve("default", "nb-1", None, answer.to_string().as_bytes()));
    let done = next_command(&mut watching).await;
    assert_eq!(done.status.as_str(), "succeeded");
    assert_eq!(done.response, Some(answer));

    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.recv())
            .await
            .is_err(),
        "a stream watching another device sees none of it"
    );
}
