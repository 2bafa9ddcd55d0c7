use isolates::{Context, Isolate};
use std::time::{Duration, Instant};
struct Echo;
impl Isolate for Echo {
    type Args = ();
    type Message = u64;
    type Reply = u64;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Echo)
    }
    fn handle(&mut self, m: u64, _: &mut Context<Self>) -> Result<u64, String> {
        Ok(m + 1)
    }
}
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(200_000);
    let c = Echo::spawn(()).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..n {
            assert_eq!(c.ask(i, Duration::from_secs(10)).unwrap(), i + 1);
        }
        println!("ask {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
