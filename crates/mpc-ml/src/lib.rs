//! # mpc-ml — neural networks over Membrane's MPC core
//!
//! * [`model`] — [`Model`] (the owner's network with weights), [`Plan`] (the public op list all
//!   parties agree on by hash) and [`OutputPolicy`];
//! * [`op`] — the operator registry: each graph operator one type owning its shape rule,
//!   plaintext reference, bounds, private evaluation and ONNX import/export;
//! * [`backend`] — [`Backend`], the engine as model code sees it (today's `mpc_proto::Party`
//!   implements it; model code never names a concrete party type);
//! * [`infer`](mod@infer) — private inference of a plan over secret shares;
//! * [`analytics`] — statistics of secret-shared columns (sum, mean, variance, min/max,
//!   histograms, correlation) revealed to the data owner only;
//! * [`plain`] — the plaintext `f64` reference of every operation, which the tests compare the
//!   secure protocols against.
#![deny(unsafe_code)]

pub mod analytics;
pub mod backend;
pub mod bounds;
pub mod data;
mod error;
pub mod infer;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod op;
pub mod ops;
pub mod plain;
pub mod plan_hash;
pub mod train;

pub use backend::Backend;
pub use bounds::{CompareSpec, PlanOptions};
pub use error::ModelError;
pub use infer::{Inference, LayerProfile, LoadedModel, infer, infer_shared, shared_weight_shapes};
pub use model::{Layer, Model, OutputPolicy, PLAN_VERSION, Plan, Step};
pub use op::{Op, Operator};
pub use plan_hash::plan_hash;
