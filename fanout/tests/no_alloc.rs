//! Invariant 4: delivering a frame to N subscribers allocates nothing per subscriber.
//!
//! A counting global allocator records every allocation while one frame goes to 10,000 subscribers' outbound
//! queues through the subscription index, the same calls the server's shards make.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tickwire_core::time::Micros;
use tickwire_core::{Channel, Topic};
use tickwire_fanout::index::{Sink, SubscriptionIndex};
use tickwire_fanout::outbound::{Outbound, NO_STAMP};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator, under the caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout, through `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator, under the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone)]
struct Conn(u64, Rc<RefCell<Outbound>>);

impl Sink for Conn {
    fn key(&self) -> u64 {
        self.0
    }
    fn push(&self, frame: &Bytes, ingested: Micros, conflate: u64) {
        self.1.borrow_mut().push(frame.clone(), ingested, conflate);
    }
}

#[test]
fn fanout_to_10k_subscribers_allocates_nothing_per_subscriber() {
    const N: u64 = 10_000;
    let topic = Topic::new(Channel::Quotes, "AAPL");
    let mut index = SubscriptionIndex::new();
    let conns: Vec<Conn> = (0..N).map(|k| Conn(k, Rc::new(RefCell::new(Outbound::new(1 << 20, 64))))).collect();
    for c in &conns {
        index.add(&topic, c.clone(), 0, 0);
        index.activate(&topic, c.0, 0);
    }
    let frame = tickwire_fanout::frame::Rendered::canonical(Bytes::from(vec![b'x'; 120]));
    let mut write_buf = Vec::with_capacity(64 * 1024);

    // Warm up once, then measure steady state: deliver and flush, ten rounds.
    index.deliver(&topic, &frame, NO_STAMP, 0);
    for c in &conns {
        write_buf.clear();
        c.1.borrow_mut().drain_into(&mut write_buf, 64 * 1024);
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut delivered = 0;
    for round in 0..10 {
        delivered += index.deliver(&topic, &frame, NO_STAMP, round).0;
        for c in &conns {
            write_buf.clear();
            c.1.borrow_mut().drain_into(&mut write_buf, 64 * 1024);
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(delivered, 10 * N as usize);
    assert_eq!(allocations, 0, "{allocations} allocations for {delivered} deliveries");
}
