//! The host side of the WIT contract, generated once: the store capability's types and traits.

wasmtime::component::bindgen!({
    world: "relay",
    path: "../wit",
});

pub use self::agent_relay::relay::store::{
    Executed, Rows, Setting, SettingSource, SqlDialect, StoreError, Value,
};
