//! The service against a real, private `dbus-daemon` with the shipped
//! policy: what targetcli sees, root-only methods, device objects, and
//! reconnection after the bus daemon restarts. Needs `dbus-daemon`,
//! `dbus-send`, `setpriv` and root, so it is ignored by default:
//! `cargo test -p tcmu-runner -- --ignored bus_`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use tcmu_runtime::DeviceStats;
use zbus::connection::Builder;
use zbus::fdo::ManagedObjects;
use zbus::{Connection, OwnedVariant};

use super::external::ExternalHandlers;
use super::service::Service;
use crate::devices::{DeviceInfo, DeviceTable};

/// A private system-type bus on a socket in `dir`.
struct Bus {
    dir: PathBuf,
    child: Child,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let policy = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dist/dbus-1/system.d/tcmu-runner.conf"
        );
        let socket = dir.join("socket");
        let conf = dir.join("bus.conf");
        // The same bus configuration the VM tests use, minus its <user>
        // line: this bus runs as root with its socket in a private folder.
        let template = include_str!("../../../tests/vm/dbus-system.conf.in");
        let text: String = template
            .lines()
            .filter(|l| !l.contains("@USER@"))
            .map(|l| {
                l.replace("@SOCKET@", &socket.display().to_string())
                    .replace("@POLICY@", policy)
                    + "\n"
            })
            .collect();
        std::fs::write(&conf, text).unwrap();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Bus {
            dir: dir.to_owned(),
            child,
        }
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.join("socket").display())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn call<B>(
    conn: &Connection,
    path: &str,
    iface: &str,
    method: &str,
    body: &B,
) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zbus::DynamicType,
{
    conn.call_method(
        Some(super::names::BUS_NAME),
        path,
        Some(iface),
        method,
        body,
    )
    .await
}

async fn wait_for_name(addr: &str) -> Connection {
    for _ in 0..100 {
        if let Ok(conn) = Builder::address(addr).build().await {
            let reply = call(
                &conn,
                "/org/kernel/TCMUService1",
                "org.freedesktop.DBus.Peer",
                "Ping",
                &(),
            )
            .await;
            if reply.is_ok() {
                return conn;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", super::names::BUS_NAME);
}

struct ExtHandler;

#[zbus::interface(name = "org.kernel.TCMUService1")]
impl ExtHandler {
    fn check_config(&self, cfg: String) -> (bool, String) {
        (false, format!("ext says no to {cfg}"))
    }
}

async fn managed(conn: &Connection) -> ManagedObjects {
    let reply = call(
        conn,
        "/org/kernel/TCMUService1",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        &(),
    )
    .await
    .unwrap();
    reply.body().deserialize().unwrap()
}

fn dbus_send_as(uid: u32, addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ])
        .arg("dbus-send")
        .arg(format!("--bus={addr}"))
        .args(["--print-reply", "--dest=org.kernel.TCMUService1"])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dbus-daemon, dbus-send, setpriv and root"]
async fn bus_service_end_to_end() {
    let dir = PathBuf::from(format!("/run/tcmu-rs-bus-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bus = Bus::start(&dir);
    let addr = bus.address();
    let table = DeviceTable::default();
    let stats = Arc::new(DeviceStats::default());
    table.insert(DeviceInfo {
        minor: 0,
        hba: 1,
        name: "d-0".into(),
        dev_config: "ram/1M".into(),
        stats: stats.clone(),
    });
    let service = Service {
        registry: crate::handlers::registry(),
        table: table.clone(),
        external: ExternalHandlers::default(),
        address: Some(addr.clone()),
    };
    let task = tokio::spawn(service.run());
    let conn = wait_for_name(&addr).await;

    // What targetcli reads: exactly the handler objects, with ConfigDesc.
    let objects = managed(&conn).await;
    let mut paths: Vec<String> = objects.keys().map(|p| p.to_string()).collect();
    paths.sort();
    let mut expected: Vec<String> = crate::handlers::registry()
        .iter()
        .map(|f| format!("/org/kernel/TCMUService1/{}", f.subtype()))
        .collect();
    expected.sort();
    assert_eq!(paths, expected);
    // The rest of this test uses these two.
    for h in ["file", "ram"] {
        assert!(paths.contains(&format!("/org/kernel/TCMUService1/{h}")));
    }

    // CheckConfig as root: the handler's own verdict.
    let check = |cfg: &'static str, path: &'static str| {
        let conn = conn.clone();
        async move {
            let r = call(
                &conn,
                path,
                "org.kernel.TCMUService1",
                "CheckConfig",
                &(cfg,),
            )
            .await
            .unwrap();
            r.body().deserialize::<(bool, String)>().unwrap()
        }
    };
    assert_eq!(
        check("ram/64M", "/org/kernel/TCMUService1/ram").await,
        (true, "success".to_owned())
    );
    let (ok, msg) = check("ram/lots", "/org/kernel/TCMUService1/ram").await;
    assert!(
        !ok && msg.starts_with("ram handler: invalid size 'lots'"),
        "{msg}"
    );
    let (ok, msg) = check("file//nonexistent-dir/x", "/org/kernel/TCMUService1/file").await;
    assert!(!ok && msg.contains("/nonexistent-dir"), "{msg}");

    // Non-root: refused by the policy; reading is allowed.
    let (ok, text) = dbus_send_as(
        65534,
        &addr,
        &[
            "/org/kernel/TCMUService1/ram",
            "org.kernel.TCMUService1.CheckConfig",
            "string:ram/1M",
        ],
    );
    assert!(!ok && text.contains("AccessDenied"), "{text}");
    let (ok, text) = dbus_send_as(
        65534,
        &addr,
        &[
            "/org/kernel/TCMUService1",
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
        ],
    );
    assert!(ok && text.contains("ConfigDesc"), "{text}");
    let (ok, text) = dbus_send_as(
        65534,
        &addr,
        &[
            "/org/kernel/TCMUService1/HandlerManager1",
            "org.kernel.TCMUService1.HandlerManager1.RegisterHandler",
            "string:x",
            "string:y",
        ],
    );
    assert!(!ok && text.contains("AccessDenied"), "{text}");

    // Device objects: live counters.
    stats.record(
        tcmu_runtime::stats::Direction::Write,
        4096,
        0,
        Duration::from_micros(30),
    );
    let dev = "/org/kernel/TCMUService1/device/1_d_2d0";
    let get = |prop: &'static str| {
        let conn = conn.clone();
        async move {
            let r = call(
                &conn,
                dev,
                "org.freedesktop.DBus.Properties",
                "Get",
                &("org.kernel.TCMUService1.Device1", prop),
            )
            .await
            .unwrap();
            r.body().deserialize::<OwnedVariant>().unwrap()
        }
    };
    assert_eq!(u64::try_from(get("WriteBytes").await).unwrap(), 4096);
    assert_eq!(String::try_from(get("Name").await).unwrap(), "d-0");
    let (ok, text) = dbus_send_as(
        65534,
        &addr,
        &[
            dev,
            "org.freedesktop.DBus.Properties.GetAll",
            "string:org.kernel.TCMUService1.Device1",
        ],
    );
    assert!(ok && text.contains("LatencyHistogram"), "{text}");
    table.remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone = call(
        &conn,
        dev,
        "org.freedesktop.DBus.Properties",
        "Get",
        &("org.kernel.TCMUService1.Device1", "Name"),
    )
    .await;
    assert!(gone.is_err(), "{dev} still there");

    // RegisterHandler: built-in subtypes and absent owners are refused.
    let reg = |subtype: &'static str| {
        let conn = conn.clone();
        async move {
            let r = call(
                &conn,
                "/org/kernel/TCMUService1/HandlerManager1",
                "org.kernel.TCMUService1.HandlerManager1",
                "RegisterHandler",
                &(subtype, "desc"),
            )
            .await
            .unwrap();
            r.body().deserialize::<(bool, String)>().unwrap()
        }
    };
    let (ok, msg) = reg("file").await;
    assert!(!ok && msg.contains("built into"), "{msg}");
    let (ok, msg) = reg("ext").await;
    assert_eq!(
        (ok, msg.as_str()),
        (
            false,
            "Cannot find handler bus name: org.kernel.TCMUService1.HandlerManager1.ext"
        )
    );

    // An out-of-process handler: listed, CheckConfig forwarded, dropped
    // when it leaves the bus.
    let ext = Builder::address(addr.as_str())
        .serve_at("/org/kernel/TCMUService1/HandlerManager1/ext", ExtHandler)
        .name("org.kernel.TCMUService1.HandlerManager1.ext")
        .build()
        .await
        .unwrap();
    assert_eq!(reg("ext").await, (true, "succeeded".to_owned()));
    assert_eq!(managed(&conn).await.len(), expected.len() + 1);
    let (ok, msg) = check("ext/abc", "/org/kernel/TCMUService1/ext").await;
    assert_eq!((ok, msg.as_str()), (false, "ext says no to ext/abc"));
    drop(ext);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(managed(&conn).await.len(), expected.len());

    // The bus daemon restarts: the service comes back on its own.
    drop(conn);
    bus.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut bus = Bus::start(&dir);
    let conn = wait_for_name(&bus.address()).await;
    let objects = managed(&conn).await;
    assert_eq!(objects.len(), expected.len());
    task.abort();
    bus.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
