//! One prediction per version, on a typical SMS and on a long one.
//! Target: median ≤ 10 µs (see README).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use model_service::model::{Model, Version};

const TYPICAL: &str = "Hey, are we still on for dinner tonight? Let me know when you leave work.";
const LONG: &str = "URGENT! Your mobile number has been awarded a £2000 prize GUARANTEED. \
Call 09061790126 from land line. Claim 3030. Valid 12hrs only. T&C apply. \
To stop further messages reply STOP. Customer services 08717890890 150p/min.";

fn predict(c: &mut Criterion) {
    let models = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    for version in Version::ALL {
        let model = Model::load(models, version).unwrap_or_else(|err| panic!("{err}"));
        for (name, text) in [("typical", TYPICAL), ("long", LONG)] {
            c.bench_function(&format!("predict/{version}/{name}"), |b| {
                b.iter(|| model.predict(black_box(text)))
            });
        }
    }
}

criterion_group!(benches, predict);
criterion_main!(benches);
