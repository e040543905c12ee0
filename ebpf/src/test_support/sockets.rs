//! Client processes with one socket each, driven line by line, and loopback echo backends:
//! what the tests of UDP Services and of the addresses applications are shown need.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{TestCgroup, TestNetns};

/// A UDP server on `ip` (any address of 127.0.0.0/8, or in a test network namespace) that
/// answers every datagram with `<its ip:port> <the datagram>`, so a client learns which
/// backend answered whatever source address it is shown.
pub struct UdpEchoBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoBackend {
    pub fn start(ip: Ipv4Addr) -> UdpEchoBackend {
        UdpEchoBackend::serve(bind_udp(IpAddr::V4(ip)))
    }

    /// On `ip` inside `netns` (::1, or an address given to its loopback).
    pub fn start_in(netns: &TestNetns, ip: IpAddr) -> UdpEchoBackend {
        UdpEchoBackend::serve(netns.run(|| bind_udp(ip)))
    }

    fn serve(socket: UdpSocket) -> UdpEchoBackend {
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("udp timeout");
        let addr = socket.local_addr().expect("udp addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let reply = format!("{addr} {}", String::from_utf8_lossy(&buf[..n]));
                    let _ = socket.send_to(reply.as_bytes(), from);
                }
            }
        });
        UdpEchoBackend { addr, stop, thread: Some(thread) }
    }
}

fn bind_udp(ip: IpAddr) -> UdpSocket {
    UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind udp echo backend on {ip}: {e}"))
}

impl Drop for UdpEchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One socket in a client process placed in a test cgroup (perl, which Debian always has:
/// bash's /dev/udp cannot send unconnected datagrams, receive with the source address or
/// call getpeername). The process joins the cgroup before it creates the socket, so the
/// cgroup's programs see every call; it runs one command per line and answers each.
pub struct SocketClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The client: `perl -e CLIENT <cgroup.procs> <udp|tcp> <inet|inet6>`. Answers `ready`
/// once in the cgroup with its socket, then one line per command: `ok`, `error <errno
/// text>`, `timeout`, `from <address> <data>` or `<address>`, addresses as `ip:port` or
/// `[ipv6]:port`. An inet6 socket is dual-stack: it may dial `::ffff:a.b.c.d`.
const CLIENT: &str = r#"
use strict; use warnings; use IO::Handle;
use Socket qw(:DEFAULT inet_ntoa inet_pton inet_ntop pack_sockaddr_in6 unpack_sockaddr_in6 AF_INET6);
my ($procs, $proto, $family) = @ARGV;
my $v6 = $family eq 'inet6';
open(my $cgroup, '>', $procs) or exit 99; print $cgroup "$$\n"; close($cgroup) or exit 99;
socket(my $s, $v6 ? AF_INET6 : AF_INET, $proto eq 'tcp' ? SOCK_STREAM : SOCK_DGRAM, 0) or die "socket: $!";
STDOUT->autoflush(1);
sub addr { $v6 ? pack_sockaddr_in6($_[1], inet_pton(AF_INET6, $_[0])) : pack_sockaddr_in($_[1], inet_aton($_[0])) }
sub show {
    if ($v6) { my ($port, $ip) = unpack_sockaddr_in6($_[0]); return '[' . inet_ntop(AF_INET6, $ip) . "]:$port" }
    my ($port, $ip) = unpack_sockaddr_in($_[0]); inet_ntoa($ip) . ":$port"
}
sub done { print $_[0] ? "ok\n" : "error $!\n" }
print "ready\n";
while (my $line = <STDIN>) {
    my ($cmd, @arg) = split ' ', $line;
    if ($cmd eq 'connect') { done(connect($s, addr(@arg))) }
    elsif ($cmd eq 'sendto') { done(defined send($s, $arg[2], 0, addr(@arg))) }
    elsif ($cmd eq 'send') { done(defined send($s, $arg[0], 0)) }
    elsif ($cmd eq 'peer') { my $peer = getpeername($s); print $peer ? show($peer) . "\n" : "error $!\n" }
    elsif ($cmd eq 'readline') { my $got = <$s>; print defined $got ? $got : "error eof\n" }
    elsif ($cmd eq 'recv') {
        my $ready = ''; vec($ready, fileno($s), 1) = 1;
        if (!select($ready, undef, undef, $arg[0] / 1000)) { print "timeout\n"; next }
        my $from = recv($s, my $data, 512, 0);
        print defined $from ? 'from ' . show($from) . " $data\n" : "error $!\n";
    }
    else { print "error unknown command $cmd\n" }
}
"#;

impl SocketClient {
    /// A client with one UDP socket, unconnected until [`connect`](Self::connect).
    pub fn udp(cgroup: &TestCgroup) -> SocketClient {
        SocketClient::spawn(Command::new("perl"), cgroup, "udp", "inet")
    }

    /// A client with one TCP socket, to [`connect`](Self::connect).
    pub fn tcp(cgroup: &TestCgroup) -> SocketClient {
        SocketClient::spawn(Command::new("perl"), cgroup, "tcp", "inet")
    }

    /// A client in `netns` with one (dual-stack) IPv6 UDP socket.
    pub fn udp6(cgroup: &TestCgroup, netns: &TestNetns) -> SocketClient {
        SocketClient::spawn(netns.command("perl"), cgroup, "udp", "inet6")
    }

    /// A client in `netns` with one (dual-stack) IPv6 TCP socket.
    pub fn tcp6(cgroup: &TestCgroup, netns: &TestNetns) -> SocketClient {
        SocketClient::spawn(netns.command("perl"), cgroup, "tcp", "inet6")
    }

    fn spawn(mut perl: Command, cgroup: &TestCgroup, proto: &str, family: &str) -> SocketClient {
        let mut child = perl
            .args(["-e", CLIENT])
            .arg(cgroup.procs_file())
            .args([proto, family])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the perl socket client");
        let stdin = child.stdin.take().expect("client stdin");
        let stdout = BufReader::new(child.stdout.take().expect("client stdout"));
        let mut client = SocketClient { child, stdin, stdout };
        let ready = client.answer();
        assert_eq!(ready, "ready", "the client could not join the test cgroup or open its socket");
        client
    }

    /// One line of the client; panics with its stderr when it died.
    fn answer(&mut self) -> String {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let mut stderr = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("the socket client exited ({:?}): {stderr}", self.child.wait());
        }
        line.trim_end().to_owned()
    }

    fn command(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to the socket client");
        self.answer()
    }

    fn ok(&mut self, command: &str) -> Result<(), String> {
        match self.command(command) {
            answer if answer == "ok" => Ok(()),
            answer => Err(answer),
        }
    }

    /// `connect()`; `Err` holds the client's `error <errno text>` answer.
    pub fn connect(&mut self, to: SocketAddr) -> Result<(), String> {
        self.ok(&format!("connect {} {}", to.ip(), to.port()))
    }

    /// `sendto()` of `data` (one word) to `to`.
    pub fn send_to(&mut self, to: SocketAddr, data: &str) -> Result<(), String> {
        self.ok(&format!("sendto {} {} {data}", to.ip(), to.port()))
    }

    /// `send()` of `data` (one word) on the connected socket.
    pub fn send(&mut self, data: &str) -> Result<(), String> {
        self.ok(&format!("send {data}"))
    }

    /// `recvfrom()`: the source address the application is shown and the data, or `None`
    /// when nothing arrives within `timeout`.
    pub fn recv_from(&mut self, timeout: Duration) -> Option<(SocketAddr, String)> {
        let answer = self.command(&format!("recv {}", timeout.as_millis()));
        if answer == "timeout" {
            return None;
        }
        let rest = answer.strip_prefix("from ").unwrap_or_else(|| panic!("recv: {answer}"));
        let (from, data) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((from.parse().unwrap_or_else(|e| panic!("recv source {from}: {e}")), data.to_owned()))
    }

    /// `getpeername()`.
    pub fn peer_addr(&mut self) -> Result<SocketAddr, String> {
        let answer = self.command("peer");
        answer.parse().map_err(|_| answer)
    }

    /// One line read from the connected TCP socket.
    pub fn read_line(&mut self) -> String {
        self.command("readline")
    }
}

impl Drop for SocketClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
