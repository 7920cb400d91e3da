//! Measures the redaction scanners' native throughput on a mixed text:
//! `cargo run --release -p sample-pii-redact --example throughput`.
//! (The engine's benchmark measures the component end to end.)

use std::time::Instant;

fn main() {
    let record = "{\"order\": 1042, \"customer\": \"jane.doe@example.com\", \"note\": \
                  \"call +1 555 123 4567 after 6pm\", \"card\": \"4111 1111 1111 1111\", \
                  \"ts\": 1700000000000, \"items\": [\"apples\", \"pears\"], \
                  \"comment\": \"the quick brown fox jumps over the lazy dog\"}\n";
    let plain = "{\"order\": 1042, \"customer\": \"c-1042\", \"note\": \"leave at the door\", \
                 \"ts\": 1700000000000, \"items\": [\"apples\", \"pears\"], \
                 \"comment\": \"the quick brown fox jumps over the lazy dog\"}\n";
    for (name, text) in [("with PII", record), ("without PII", plain)] {
        let input = text.repeat(1 << 14);
        let rounds = 20;
        let start = Instant::now();
        let mut out_len = 0;
        for _ in 0..rounds {
            out_len += sample_pii_redact::redact(std::hint::black_box(input.as_bytes())).len();
        }
        let secs = start.elapsed().as_secs_f64();
        let mb = (input.len() * rounds) as f64 / 1e6;
        println!(
            "{name:>12}: {:.0} MB/s ({} bytes out)",
            mb / secs,
            out_len / rounds
        );
    }
}
