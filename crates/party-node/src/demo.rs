//! `party-node demo`: the main demo on an embedded default. Three `party-node` processes
//! (Alice, Bob, dealer) on loopback over QUIC with mutual TLS; Alice publishes a small MNIST CNN
//! (conv, batch norm, max and average pooling, exported by PyTorch), Bob gets predictions for
//! bundled test images, and neither sees the other's plaintext.

use anyhow::{Context, ensure};
use mpc_ml::{OutputPolicy, npy};
use ndarray::{Axis, Slice};

use crate::local;

const MODEL: &[u8] = include_bytes!("../../../fixtures/onnx/mnist_cnn.onnx");
const IMAGES: &[u8] = include_bytes!("../../../fixtures/onnx/mnist_cnn.input.npy");
const LABELS: &[u8] = include_bytes!("../../../fixtures/onnx/mnist_cnn.labels.npy");

pub(crate) fn run(images: usize) -> anyhow::Result<()> {
    ensure!((1..=100).contains(&images), "--images must be between 1 and 100 (the bundled test set)");
    let dir = std::env::temp_dir().join(format!("membrane-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model = dir.join("mnist_cnn.onnx");
    std::fs::write(&model, MODEL)?;
    let x = npy::parse(IMAGES).map_err(anyhow::Error::msg)?.slice_axis(Axis(0), Slice::from(0..images)).to_owned();
    let labels = npy::parse(LABELS).map_err(anyhow::Error::msg)?;
    let input = dir.join("bob_images.npy");
    npy::write(&input, &x)?;
    let output = dir.join("bob_predictions.npy");

    println!("Membrane demo: private inference across three organisations, on this machine.");
    println!("  alice  (model owner) holds a CNN trained on MNIST: conv, batch norm, ReLU, max/avg pooling, linear");
    println!("  bob    (data owner)  holds {images} handwritten digits (28×28)");
    println!("  dealer               supplies correlated randomness and sees neither\n");

    let mut c = local::Consortium::start(false, party_node::config::Mode::Dealer)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The images are scaled to [0, 1]: declaring it lets every comparison use the narrow
    // window the weights imply (docs/security.md, "The comparison window").
    let opts = local::PublishOptions { input_range: Some([0.0, 1.0]), ..Default::default() };
    let r = rt.block_on(local::predict(&mut c, &model, &input, &output, OutputPolicy::Label, &opts))?;
    drop(c);
    let plain = local::plaintext(&model, &input, OutputPolicy::Label)?;
    let got: Vec<usize> = r.output.iter().map(|&v| v as usize).collect();
    let want: Vec<usize> = plain.iter().map(|&v| v as usize).collect();
    let truth: Vec<usize> = labels.iter().take(images).map(|&v| v as usize).collect();
    let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    let correct = got.iter().zip(&truth).filter(|(a, b)| a == b).count();

    println!("\nbob learns only the predicted digit of each image (output policy: label):");
    println!("  predicted: {}", got.iter().take(32).map(|d| d.to_string()).collect::<Vec<_>>().join(" "));
    println!("  true:      {}", truth.iter().take(32).map(|d| d.to_string()).collect::<Vec<_>>().join(" "));
    println!("  accuracy {correct}/{images}; agreement with plaintext inference {agree}/{images}");
    println!("  wall time {:.2} s for the whole job (dealer material generated on demand)", r.seconds);
    local::print_profile(&r);
    println!("\nnext:");
    println!("  your own model:   party-node local predict --model M.onnx --input X.npy --output Y.npy --verify");
    println!(
        "  real deployment:  party-node init / run / publish / register / predict (README.md, crates/party-node/README.md)"
    );
    println!("  the library API:  cargo run --release --example private_dot_product; docs/security.md");
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(agree == images, "private predictions disagree with plaintext on {} images", images - agree);
    Ok(())
}
