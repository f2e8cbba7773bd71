//! A real redis-server for the cluster rate limit's tests: started on a free loopback port with
//! persistence off, killed when dropped, restartable on the same port (the "Redis came back"
//! case). Debian package: `redis-server` (`.ci/run` installs it).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// TLS files for `--tls-port` (PEM paths).
#[derive(Clone)]
pub struct RedisTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA (`--tls-auth-clients yes`).
    pub ca: PathBuf,
}

pub struct Redis {
    pub port: u16,
    tls: Option<RedisTls>,
    /// `--requirepass`: clients must AUTH with it.
    password: Option<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    // Bind port 0 and release it: the kernel does not hand the same port out again at once.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    pub fn start_tls(tls: RedisTls) -> Self {
        Self::start_with(Some(tls))
    }

    /// A server that refuses commands until a client authenticates with `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_inner(None, Some(password.to_string()))
    }

    fn start_with(tls: Option<RedisTls>) -> Self {
        Self::start_inner(tls, None)
    }

    fn start_inner(tls: Option<RedisTls>, password: Option<String>) -> Self {
        // Another process may take the released port before redis-server binds it: retry.
        for _ in 0..5 {
            let mut r = Self {
                port: free_port(),
                tls: tls.clone(),
                password: password.clone(),
                child: None,
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://` (or `rediss://` with TLS) URL of this server.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        match &self.tls {
            None => {
                cmd.args(["--port", &port]);
            }
            Some(t) => {
                cmd.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "yes"]);
                cmd.arg("--tls-cert-file").arg(&t.cert);
                cmd.arg("--tls-key-file").arg(&t.key);
                cmd.arg("--tls-ca-cert-file").arg(&t.ca);
            }
        }
        let child = match cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the cluster rate limit tests need a real Redis \
                 (Debian/Ubuntu: apt-get install redis-server; .ci/run installs it)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        // Ready when it accepts connections (a plain PING needs no TLS to know the port is up).
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return false; // exited: the port was taken
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() && self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        if self.tls.is_some() {
            return true; // accepting TCP is enough; the TLS test talks TLS itself
        }
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        // With `--requirepass` the answer is `-NOAUTH Authentication required.`: up all the same.
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut buf).is_ok()
            && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the server: a Redis that holds connections open and
    /// does not answer, the case a timeout is for.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("redis-server is running").id().to_string();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
