//! `uplink gateway` end to end (issue 11, "Done when"): the real `uplink` binary serving
//! S3 for an access on a network of 12 storage nodes, driven by unmodified S3 clients:
//! boto3 (`tests/s3/boto3_suite.py`: every operation, auth failures, presigned expiry,
//! multipart, ranges, listings, conditional requests) and the aws CLI, rclone and
//! restic (`tests/s3/clients.sh`). A missing client fails the test with what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use shoal_test_kit::{bounded, repo_root};
use shoal_tests::cli_net::{ACCESS_KEY, CliNet, GatewayProc, SECRET_KEY};

const NODES: usize = 12;
const CONFIG: &str = "difficulty = 0\nlocal_network = true\nscheme = \"4/6/8/12\"\ncatalog_scheme = \"4/6/8/12\"\nsnapshot_every = 16\n";

/// Runs a client program against the gateway; panics with its output if it fails.
async fn run_client(gw: &GatewayProc, program: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .env("S3_ENDPOINT", gw.endpoint())
        .env("S3_ACCESS_KEY", ACCESS_KEY)
        .env("S3_SECRET_KEY", SECRET_KEY)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_drives_every_operation() {
    bounded(Duration::from_secs(900), async {
        let net = CliNet::start(NODES, CONFIG).await.unwrap();
        let (dir, _) = net.config_dir("gateway").await.unwrap();
        let gw = GatewayProc::start(&net, &dir).await.unwrap();
        let out = run_client(&gw, "python3", &["tests/s3/boto3_suite.py"]).await;
        assert!(out.contains("checks passed"), "{out}");
        let status = gw.stop().await.unwrap();
        assert!(
            status.success(),
            "the gateway exited with {status} on SIGTERM"
        );

        // Every acknowledged write is in the network: nothing is left unpublished, and a
        // new machine importing the grant sees the objects.
        let status = net
            .ok(&dir, &["catalog", "status", "--json"])
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["pending"], 0, "{status}");
        let (other, _) = net.config_dir("elsewhere").await.unwrap();
        let listing = net
            .ok(&other, &["ls", "-r", "shoal://alpha"])
            .await
            .unwrap();
        for key in ["mp/object.bin", "big.bin", "notes/hello.txt", "copy.bin"] {
            assert!(listing.contains(key), "{key} missing from {listing}");
        }
        let back = net.work.path().join("mp.bin");
        net.ok(
            &other,
            &["cp", "shoal://alpha/mp/object.bin", back.to_str().unwrap()],
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::metadata(&back).unwrap().len(),
            15 * 1024 * 1024 + 123_457
        );
        net.cluster.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_rclone_and_restic_work_unmodified() {
    bounded(Duration::from_secs(900), async {
        let net = CliNet::start(NODES, CONFIG).await.unwrap();
        let (dir, _) = net.config_dir("gateway").await.unwrap();
        let gw = GatewayProc::start(&net, &dir).await.unwrap();
        let out = run_client(&gw, "bash", &["tests/s3/clients.sh"]).await;
        assert!(out.contains("all S3 clients passed"), "{out}");
        let status = gw.stop().await.unwrap();
        assert!(
            status.success(),
            "the gateway exited with {status} on SIGTERM"
        );
        net.cluster.shutdown().await.unwrap();
    })
    .await;
}
