//! Weft's kernel programs.
//!
//! * `weft_connect4` / `weft_connect6` (`cgroup/connect4`, `cgroup/connect6`): a TCP
//!   connection opened from an enrolled network namespace is redirected to the agent's
//!   outbound listener on loopback; its original destination is recorded under the
//!   socket's cookie.
//! * `weft_sockops` (`sockops`): when the redirected connection sends its SYN, its local
//!   address is known; the original destination moves to a map keyed by namespace and
//!   local address, which is what the agent sees as the peer of the accepted socket.
//! * `weft_sk_lookup` (`sk_lookup`, per enrolled namespace): a plaintext connection
//!   arriving for an enrolled pod is handed to the agent's inbound listener.
//! * `weft_sockops` also adds the sockets of local legs (both ends in one enrolled
//!   namespace: app ↔ agent) to a sockhash, and `weft_sk_msg` (`sk_msg`, attached to
//!   it) passes their bytes socket to socket.
//!
//! * `weft_sendmsg4|6` (`cgroup/sendmsg*`, and UDP `connect()` in `weft_connect*`): a
//!   DNS datagram (UDP port 53) from an enrolled namespace whose DNS the agent answers
//!   goes to the agent's resolver on loopback; `weft_recvmsg4|6` (`cgroup/recvmsg*`)
//!   show its answers as coming from the server asked.
//!
//! Every decision is counted per reason (`agent_common::Decision`).
//!
//! Built for any other target (as `cargo build --workspace` does), the binary only says
//! where it belongs: the programs exist for the BPF target alone.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod capture;
#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod inbound;
#[cfg(target_arch = "bpf")]
mod local;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "agent-ebpf holds Weft's kernel programs; it is built for bpfel-unknown-none by \
         agent/build.rs and embedded in weft-agent"
    );
    std::process::exit(2);
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists to satisfy the
    // compiler.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
