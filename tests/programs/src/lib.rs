//! Test programs, kept apart from the product: the relay component built with the
//! fault-injection exports (`wit/faults.wit`), which the shipped component lacks. Tests run it
//! with `serve --component PATH`.

/// Where the test component was written.
pub const FAULTS_COMPONENT: &str = env!("RELAY_FAULTS_COMPONENT");
