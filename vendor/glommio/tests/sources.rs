//! Tests of tickwire's second change (see tickwire's vendor/README.md): the socket addresses and message
//! headers of `accept`, `connect`, `recvmsg` and `sendmsg` sources are boxed. Each test drives one of those
//! operations through the ring and checks what the kernel wrote or read through the boxed fields.

use std::net::UdpSocket as StdUdp;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{
    net::{TcpListener, TcpStream, UdpSocket},
    LocalExecutorBuilder, Placement,
};

fn executor() -> glommio::LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .unwrap()
}

#[test]
fn accept_and_connect_through_the_ring_carry_the_peers_addresses() {
    executor().run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The accept is pending in the ring before the connect is made.
        let server = glommio::spawn_local(async move {
            let mut s = listener.accept().await.unwrap();
            let peer = s.peer_addr().unwrap();
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            (peer, got)
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let local = client.local_addr().unwrap();
        assert_eq!(client.peer_addr().unwrap(), addr);
        client.write_all(b"hello").await.unwrap();
        let (peer, got) = server.await;
        assert_eq!(peer, local);
        assert_eq!(&got, b"hello");
    });
}

#[test]
fn recv_from_waiting_in_the_ring_gets_the_datagram_and_its_sender() {
    executor().run(async {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = StdUdp::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        // Nothing is there yet when the spawned task first runs (it runs at the yield below, before the
        // send): the receive goes to the ring, a `recvmsg` with its boxed header.
        let waiting = glommio::spawn_local(async move {
            let mut buf = [0u8; 64];
            let (n, addr) = receiver.recv_from(&mut buf).await.unwrap();
            (buf[..n].to_vec(), addr)
        });
        futures_lite::future::yield_now().await;
        sender.send_to(b"datagram", to).unwrap();
        let (data, addr) = waiting.await;
        assert_eq!(data, b"datagram");
        assert_eq!(addr, from);
    });
}

#[test]
fn send_to_reaches_its_destination() {
    executor().run(async {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = StdUdp::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        for i in 0..64u8 {
            assert_eq!(sender.send_to(&[i; 32], to).await.unwrap(), 32);
        }
        let mut buf = [0u8; 64];
        for i in 0..64u8 {
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0], from), (32, i, sender.local_addr().unwrap()));
        }
    });
}
