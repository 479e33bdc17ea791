//! A real Kubernetes control plane for the cluster test tier: etcd, kube-apiserver and
//! kube-controller-manager as `hack/control-plane.sh` builds them from the Go module proxy,
//! started on free loopback ports with a generated CA, serving certificate, admin client
//! certificate and service-account signing key, and stopped when dropped. No kubelet: pods stay
//! Pending, which is all admission needs.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The issuer the API server writes into service-account tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Where the control plane's binaries are (see [`super::tools::control_plane`]).
pub fn binaries() -> Result<PathBuf, String> {
    super::tools::control_plane()
}

/// For a test tier's own `main`: whether its cases must be skipped because the control plane's
/// binaries are not there ([`binaries`] says why); [`super::skip::tier`] prints the reason, and
/// fails the run instead under CI or `POD_IDENTITY_CLUSTER_TESTS=require` (`.ci/run`).
pub fn skip_without_control_plane(tier: &str) -> bool {
    super::skip::tier(tier, binaries())
}

/// A free TCP port on 127.0.0.1 (closed again; the process that takes it binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The certificates and keys of one control plane, PEM files in its directory.
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: String,
    admin_key: String,
    ca_pem: String,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

fn pki(dir: &Path, sa_key_pem: Option<&str>) -> Pki {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = dn("test control plane CA", None);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(2);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str, org: Option<&str>, sans: Vec<SanType>, usage| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(cn, org);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![usage];
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(2);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (serving, serving_key) = leaf(
        "kube-apiserver",
        None,
        vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (admin_cert, admin_key) = leaf(
        "admin",
        Some("system:masters"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let sa_key = match sa_key_pem {
        Some(pem) => KeyPair::from_pem(pem).unwrap(),
        None => KeyPair::generate().unwrap(),
    };

    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca_cert: write("ca.crt", &ca_pem),
        serving_cert: write("apiserver.crt", &serving),
        serving_key: write("apiserver.key", &serving_key),
        admin_cert,
        admin_key,
        ca_pem,
        sa_key: write("sa.key", &sa_key.serialize_pem()),
        sa_pub: write("sa.pub", &sa_key.public_key_pem()),
    }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Starts `bin` with `args`, its output in `log`; killed if the test process dies.
pub fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; the child dies with the test process, never orphaned.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    spawn_from_lasting_thread(cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, and test harnesses end
/// their worker threads as the queue runs dry: so every child is forked by one thread that lives
/// as long as the test process.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .expect("the spawner thread runs");
    answer.recv().expect("the spawner thread answers")
}

pub fn stop(child: &mut Child) {
    // SIGTERM first: etcd and the API server flush and close their listeners.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a log, for a failure message.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// etcd, kube-apiserver and kube-controller-manager, running.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    bins: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    apiserver_args: Vec<String>,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    /// An admin (`system:masters`) kubeconfig.
    pub kubeconfig: PathBuf,
    /// The cluster CA (PEM): it signed the API server's certificate.
    pub ca_pem: String,
    /// The service-account signing key (PEM, private).
    pub sa_key: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane from the binaries in `bins`, ready to serve.
    pub fn start(bins: &Path) -> Self {
        Self::start_with_sa_key(bins, None)
    }

    /// [`Self::start`] signing service-account tokens with `sa_key_pem` (PKCS#8 PEM, RSA or
    /// ECDSA) instead of a fresh P-256 key.
    pub fn start_with_sa_key(bins: &Path, sa_key_pem: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("control-plane")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let pki = pki(d, sa_key_pem);
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = spawn(
            &bins.join("etcd"),
            &strings(&[
                "--name=test",
                &format!("--data-dir={}", d.join("etcd").display()),
                &format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"),
                // Test data: no fsync, a small backend.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=1073741824",
                "--log-level=warn",
            ]),
            &d.join("etcd.log"),
        );

        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = d.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            admin_kubeconfig(&server, &pki.ca_pem, &pki.admin_cert, &pki.admin_key),
        )
        .unwrap();
        let apiserver_args = strings(&[
            &format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={api_port}"),
            &format!("--cert-dir={}", d.join("apiserver-certs").display()),
            &format!("--tls-cert-file={}", pki.serving_cert.display()),
            &format!("--tls-private-key-file={}", pki.serving_key.display()),
            &format!("--client-ca-file={}", pki.ca_cert.display()),
            &format!("--service-account-issuer={ISSUER}"),
            &format!("--service-account-key-file={}", pki.sa_pub.display()),
            &format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=Node,RBAC",
            // The agent's DaemonSet runs privileged (link set-up).
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]);
        let apiserver = spawn(
            &bins.join("kube-apiserver"),
            &apiserver_args,
            &d.join("kube-apiserver.log"),
        );
        let mut plane = Self {
            bins: bins.to_path_buf(),
            etcd,
            apiserver: Some(apiserver),
            // Started below, once the API server answers.
            controller_manager: None,
            apiserver_args,
            server,
            kubeconfig,
            ca_pem: pki.ca_pem.clone(),
            sa_key: pki.sa_key.clone(),
            dir,
        };
        plane.wait_ready();
        let d = plane.dir.path();
        plane.controller_manager = Some(spawn(
            &bins.join("kube-controller-manager"),
            &strings(&[
                &format!("--kubeconfig={}", plane.kubeconfig.display()),
                &format!("--authentication-kubeconfig={}", plane.kubeconfig.display()),
                &format!("--authorization-kubeconfig={}", plane.kubeconfig.display()),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                &format!("--cert-dir={}", d.join("kcm-certs").display()),
                "--leader-elect=false",
                &format!(
                    "--service-account-private-key-file={}",
                    pki.sa_key.display()
                ),
                &format!("--root-ca-file={}", pki.ca_cert.display()),
                "--controllers=deployment-controller,replicaset-controller,\
                 statefulset-controller,daemonset-controller,job-controller,cronjob-controller,\
                 serviceaccount-controller,serviceaccount-token-controller,namespace-controller,\
                 garbage-collector-controller,root-ca-certificate-publisher-controller",
                "--concurrent-deployment-syncs=2",
                "--v=1",
            ]),
            &d.join("kube-controller-manager.log"),
        ));
        plane
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "kube-apiserver exited ({status}):\n{}",
                    log_tail(&self.dir.path().join("kube-apiserver.log"), 30)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after 120 s:\n{}\netcd:\n{}",
                    log_tail(&self.dir.path().join("kube-apiserver.log"), 30),
                    log_tail(&self.dir.path().join("etcd.log"), 10)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the API server and starts it again on the same port and storage: watches break
    /// and have to resume.
    pub fn restart_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            stop(&mut child);
        }
        self.apiserver = Some(spawn(
            &self.bins.join("kube-apiserver"),
            &self.apiserver_args,
            &self.dir.path().join("kube-apiserver.log.2"),
        ));
        self.wait_ready();
    }

    /// Runs the control plane's `kubectl` (the same release) with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// [`Self::kubectl`] with `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(self.bins.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` of `yaml` (YAML or JSON), which must succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml.as_bytes()));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl get KIND NAME -n NS -o json`.
    pub fn get_json(&self, kind: &str, namespace: &str, name: &str) -> serde_json::Value {
        let out = self.kubectl_ok(&["get", kind, name, "-n", namespace, "-o", "json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// A kube-rs client with the admin credentials.
    pub async fn client(&self) -> kube::Client {
        let config = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Polls `check` every 250 ms until it gives `Some`, for at most `limit`; `None` if it never
    /// does.
    pub fn eventually_or_none<T>(
        &self,
        limit: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check() {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls `check` every 100 ms until it gives `Some`, for at most `limit`.
    pub fn eventually<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {limit:?}\ncontroller manager:\n{}",
                    log_tail(&self.dir.path().join("kube-controller-manager.log"), 15)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut child) = self.controller_manager.take() {
            stop(&mut child);
        }
        if let Some(mut child) = self.apiserver.take() {
            stop(&mut child);
        }
        stop(&mut self.etcd);
    }
}

fn admin_kubeconfig(server: &str, ca: &str, cert: &str, key: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority-data: {}
users:
- name: admin
  user:
    client-certificate-data: {}
    client-key-data: {}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
",
        b64(ca),
        b64(cert),
        b64(key)
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The webhook binary of this checkout running as `serve --config`, with a serving certificate
/// for 127.0.0.1 made by its own `certs` command, and registered with a control plane through the
/// shipped webhook configurations.
pub struct WebhookProcess {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub admin_port: u16,
    ca_bundle: String,
}

/// The binary built from this checkout.
pub fn webhook_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pod-identity-webhook"))
}

impl WebhookProcess {
    /// Starts `serve` with `config` (YAML: the listeners, TLS, kubeconfig and associations file
    /// are added) and `associations` (an associations file's YAML), ready.
    pub fn start(plane: &ControlPlane, config: &str, associations: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("webhook")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let certs = d.join("certs");
        let out = Command::new(webhook_binary())
            .args(["certs", "--out"])
            .arg(&certs)
            .args(["--san", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca_bundle = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(certs.join("ca.crt")).unwrap())
        };
        std::fs::write(d.join("associations.yaml"), associations).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let config = format!(
            "listen: 127.0.0.1:{port}\nadminListen: 127.0.0.1:{admin_port}\n\
             tls: {{cert: {c}/tls.crt, key: {c}/tls.key}}\n\
             associationsFile: {d}/associations.yaml\nkubeconfig: {k}\n\
             namespace: pod-identity-webhook\n{config}",
            c = certs.display(),
            d = d.display(),
            k = plane.kubeconfig.display(),
        );
        std::fs::write(d.join("config.yaml"), config).unwrap();
        let mut hook = Self {
            child: None,
            port,
            admin_port,
            ca_bundle,
            dir,
        };
        hook.restart();
        hook
    }

    /// Starts the process (again), and waits until `/readyz` answers 200.
    pub fn restart(&mut self) {
        self.stop();
        let d = self.dir.path();
        self.child = Some(spawn(
            &webhook_binary(),
            &[
                "serve".into(),
                "--config".into(),
                d.join("config.yaml").display().to_string(),
                "--shutdown-grace".into(),
                "0s".into(),
            ],
            &d.join("webhook.log"),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin_status(self.admin_port, "/readyz") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the webhook is not ready after 30 s:\n{}",
                log_tail(&d.join("webhook.log"), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process (SIGTERM), as a rollout or a crash would take it away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }

    /// The webhook's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("webhook.log")).unwrap_or_default()
    }

    /// The shipped `manifests/base/webhooks.yaml`, each `clientConfig.service` replaced by a URL
    /// of this process and the CA bundle, nothing else changed.
    pub fn configurations(&self) -> Vec<serde_json::Value> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/webhooks.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut out = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut doc: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            for hook in doc["webhooks"].as_array_mut().unwrap() {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .expect("a service path")
                    .to_string();
                hook["clientConfig"] = serde_json::json!({
                    "url": format!("https://127.0.0.1:{}{path}", self.port),
                    "caBundle": self.ca_bundle,
                });
            }
            out.push(doc);
        }
        out
    }

    /// Registers [`Self::configurations`] with `plane`.
    pub fn register(&self, plane: &ControlPlane) {
        for doc in self.configurations() {
            plane.apply(&doc.to_string());
        }
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` on a plain-HTTP admin port: the status code, or `None` when nothing answers.
pub fn admin_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `to` relative to `from` (both absolute): kustomize refuses absolute resource paths.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    use std::path::Component;
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}
