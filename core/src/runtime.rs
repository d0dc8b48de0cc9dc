//! The wasmtime side: the relay component compiled once, a fresh instance per call.
//!
//! Every call gets a new `Store` with a memory limit and an epoch deadline, and a store session
//! (one transaction) that is committed only when the export returns `ok`. A trap, a timeout or an
//! exhausted memory costs that call alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use serde_json::{Map, Value as Json};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, InstancePre, Linker, ResourceTable, Val,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, Executed, Rows, Setting, SqlDialect, StoreError, Value};
use crate::shape::Shape;

/// The export through which the component publishes its input rules (`wit/rules.wit`).
const INPUT_RULES: &str = "input-rules";

/// One published input rule: the export, the argument's place, the JSON Schema keywords.
type InputRule = (String, String, Map<String, Json>);
use crate::store::{Access, Backend, Pending, Session};

mod memory;
mod post_return;
use memory::CallMemory;
pub use memory::MemoryBudget;
use post_return::without_post_return;

/// The relay component, built from guest/ by the build script.
pub const COMPONENT: &[u8] = include_bytes!(env!("RELAY_COMPONENT"));

/// The WIT contract the component implements.
pub const CONTRACT: &str = include_str!(concat!(env!("OUT_DIR"), "/contract.wit"));

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memory (and table) bytes per pool slot reset in place rather than decommitted.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Limits every call runs under. Built from [`Limits::default`] with the `with_` methods, so
/// that a new limit is not a breaking change:
///
/// ```no_run
/// # use std::time::Duration;
/// # use agent_relay_core::Limits;
/// let limits = Limits::default()
///     .with_memory_bytes(32 << 20)
///     .with_call_timeout(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Wall time one call may take before it is stopped.
    pub call_timeout: Duration,
    /// Instances that may exist at once (the pooling allocator's slots).
    pub instances: u32,
    /// Linear memory all instances in flight may hold together (see [`memory`]).
    pub calls_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            instances: 64,
            calls_memory_bytes: 256 << 20,
        }
    }
}

impl Limits {
    /// Linear memory one instance may grow to (default 64 MiB).
    #[must_use]
    pub fn with_memory_bytes(mut self, bytes: usize) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Wall time one call may take before it is stopped (default 5 s).
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Instances that may exist at once (default 64).
    #[must_use]
    pub fn with_instances(mut self, instances: u32) -> Self {
        self.instances = instances;
        self
    }

    /// Linear memory all instances in flight may hold together (default 256 MiB).
    #[must_use]
    pub fn with_calls_memory_bytes(mut self, bytes: usize) -> Self {
        self.calls_memory_bytes = bytes;
        self
    }
}

/// The relay's clock: the system clock (or a fixed start) plus an offset that tests may move.
///
/// Clones share the offset, so a clock handed to a runtime can still be moved from outside.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// When set, time stands still at this instant (plus the offset) instead of following the
    /// system clock: runs on different hosts then see the same times.
    start_ms: Option<i64>,
}

impl Clock {
    /// A clock that stands at `start_ms` and moves only when [`Clock::advance`] is called.
    pub fn fixed(start_ms: i64) -> Self {
        Self {
            offset_ms: Arc::default(),
            start_ms: Some(start_ms),
        }
    }

    /// Moves the clock forward (or back, with a negative amount).
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Milliseconds since the Unix epoch, as the guest sees them.
    pub fn now_ms(&self) -> i64 {
        let base = self.start_ms.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        base + self.offset_ms.load(Ordering::SeqCst)
    }
}

impl HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }
}

/// One exported function, as the generic bridge needs it.
#[derive(Debug, Clone)]
pub struct Export {
    /// The function's WIT name (`send-message`).
    pub name: String,
    /// The interface it belongs to (`commands`).
    pub interface: String,
    /// Each parameter's WIT name and shape (walked once, here, for every front-end).
    pub params: Vec<(String, Shape)>,
    pub result: Option<Shape>,
    pub access: Access,
    /// The checks the component makes on the arguments beyond their types, as JSON Schema
    /// keywords by place (`input.to`, `query.limit`): what it publishes through `input-rules`
    /// for this export, asked once when it is loaded.
    pub input_rules: BTreeMap<String, Map<String, Json>>,
    index: ComponentExportIndex,
}

impl Export {
    /// The component's rule for the argument at `at` (see [`crate::shape::Rules`]); `None`
    /// where the type is the whole rule.
    pub fn input_rule(&self, at: &str) -> Option<Map<String, Json>> {
        self.input_rules.get(at).cloned()
    }

    /// What running this export needs, small enough to hand to the thread that runs it.
    pub fn entry(&self) -> Entry {
        Entry {
            index: self.index,
            access: self.access,
            returns: self.result.is_some(),
        }
    }
}

/// An export as a call needs it: where the function is, how it uses the store, whether it
/// returns a value.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    index: ComponentExportIndex,
    access: Access,
    returns: bool,
}

/// What one run of an export produced.
pub struct Ran {
    /// The export's own `result` value.
    pub value: Val,
    /// A write left to a shared commit that is still open (see [`Runtime::run`]).
    pub pending: Option<Box<dyn Pending>>,
    /// Whether the call changed rows (what waiters on the commit signal care about).
    pub wrote: bool,
    /// What the call's answer depends on, as the guest named it.
    pub concerns: Concerns,
}

/// What a call named of what its answer depends on (docs/design.md, "Wake keys").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concerns {
    /// The call's wake keys (`store.concerns`): what a read's answer depends on, what a write
    /// changed. Empty: everything (a write wakes every waiter, a read is woken by every write).
    pub keys: Vec<String>,
    /// The earliest time (epoch ms, the call's clock) the guest named with `store.due-at`: when
    /// a read's answer may change with no write (a job becoming due).
    pub due_at: Option<i64>,
}

/// Why a call produced no answer from the guest.
#[derive(Debug)]
pub enum CallFailure {
    /// The guest trapped, ran out of time or memory: a bug or a hostile input, never the caller's.
    Trap(String),
    /// The store could not start or commit the transaction.
    Store(StoreError),
    /// The instance needed memory while the calls in flight held the whole budget for it
    /// ([`Limits::calls_memory_bytes`]): nothing was done, and the call may run again.
    OverBudget,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Trap(cause) => write!(f, "the relay component failed: {cause}"),
            CallFailure::Store(error) => write!(f, "the store failed: {error:?}"),
            CallFailure::OverBudget => write!(f, "the calls in flight hold all their memory"),
        }
    }
}

/// What a store holds for the length of one call.
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: CallMemory,
    /// The call's transaction; opened after the instance is ready, so the time a write call
    /// holds the writer is the export's own run.
    session: Option<Box<dyn Session>>,
    /// The wake keys the guest named (`store.concerns`); emptied when there are too many.
    keys: Vec<String>,
    /// The guest named more than [`MAX_WAKE_KEYS`]: the call concerns everyone.
    too_many_keys: bool,
    /// The earliest time named with `store.due-at`.
    due_at: Option<i64>,
}

impl CallState {
    fn session(&mut self) -> Result<&mut Box<dyn Session>, StoreError> {
        self.session
            .as_mut()
            .ok_or_else(|| StoreError::Other("no transaction is open for this call".to_owned()))
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Wake keys one call may name; past this the call concerns everyone.
const MAX_WAKE_KEYS: usize = 256;

impl bindings::agent_relay::relay::store::Host for CallState {
    fn concerns(&mut self, key: String) {
        if self.too_many_keys || self.keys.contains(&key) {
            return;
        }
        if self.keys.len() >= MAX_WAKE_KEYS {
            self.too_many_keys = true;
            self.keys = Vec::new();
            return;
        }
        self.keys.push(key);
    }

    fn due_at(&mut self, at: i64) {
        self.due_at = Some(self.due_at.map_or(at, |due| due.min(at)));
    }

    fn dialect(&mut self) -> SqlDialect {
        self.session
            .as_ref()
            .map_or(SqlDialect::Sqlite, |session| session.dialect())
    }

    fn lock_rows_instead(&mut self) -> Result<(), StoreError> {
        self.session()?.lock_rows_instead()
    }

    fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<Executed, StoreError> {
        self.session()?.execute(&sql, &params)
    }

    fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, StoreError> {
        self.session()?.query(&sql, &params)
    }

    fn query_page(
        &mut self,
        sql: String,
        params: Vec<Value>,
        max_bytes: u64,
    ) -> Result<Rows, StoreError> {
        self.session()?.query_page(&sql, &params, max_bytes)
    }

    fn get_setting(&mut self, key: String) -> Result<Option<String>, StoreError> {
        self.session()?.get_setting(&key)
    }

    fn set_setting(&mut self, key: String, value: String) -> Result<(), StoreError> {
        self.session()?.set_setting(&key, &value)
    }

    fn list_settings(&mut self, prefix: String) -> Result<Vec<Setting>, StoreError> {
        self.session()?.list_settings(&prefix)
    }
}

/// A fresh instance of the component for one call (see [`Runtime::prepare`]).
pub struct Prepared {
    store: Store<CallState>,
    func: wasmtime::component::Func,
    entry: Entry,
}

/// The compiled relay, ready to run calls against a backend.
pub struct Runtime {
    engine: Engine,
    pre: InstancePre<CallState>,
    exports: BTreeMap<String, Export>,
    backend: Arc<dyn Backend>,
    clock: Clock,
    limits: Limits,
    memory: Arc<MemoryBudget>,
    /// Calls run again after a lost serialization race.
    reruns: AtomicU64,
}

/// How often a call that keeps losing serialization races is run again before it answers 503.
const CONFLICT_RERUNS: u32 = 12;

/// The wait before re-run `attempt`: a random time up to 2^attempt ms, at most 64 ms, so that
/// writers that collided do not collide again in step.
fn conflict_backoff(attempt: u32) -> Duration {
    let ceiling_us = (1u64 << attempt.min(6)) * 1000;
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    Duration::from_micros(u64::from_le_bytes(bytes) % ceiling_us)
}

impl Runtime {
    /// Compiles the relay component and prepares its instances.
    ///
    /// # Errors
    /// The engine cannot be configured or the component does not match the host's contract.
    pub fn new(backend: Arc<dyn Backend>, clock: Clock, limits: Limits) -> anyhow::Result<Self> {
        Self::with_component(backend, clock, limits, COMPONENT)
    }

    /// [`Runtime::new`] for another build of the component (the tests' one with the
    /// fault-injection exports).
    ///
    /// # Errors
    /// As for [`Runtime::new`].
    pub fn with_component(
        backend: Arc<dyn Backend>,
        clock: Clock,
        limits: Limits,
        component: &[u8],
    ) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.instances)
            .total_core_instances(limits.instances * 4)
            .total_memories(limits.instances * 2)
            .total_tables(limits.instances * 4)
            .total_stacks(limits.instances)
            .max_memory_size(limits.memory_bytes)
            // A call's instance is dropped right after it answers and its slot is reused by the
            // next call: resetting the pages the call touched with memset (found by the
            // PAGEMAP_SCAN ioctl where the kernel has it) keeps them resident, instead of an
            // madvise that unmaps them, shoots down every core's TLB and faults them back in.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow!("{e:?}"))?;
        let component = load_component(&engine, component)?;

        let mut linker: Linker<CallState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow!("{e:?}"))?;
        bindings::agent_relay::relay::store::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| anyhow!("{e:?}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow!("{e:?}"))
            .context("linking the relay component")?;
        let exports = discover_exports(&engine, &component)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".to_owned())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch ticker")?;

        let mut runtime = Self {
            engine,
            pre,
            exports,
            backend,
            clock,
            memory: MemoryBudget::new(limits.calls_memory_bytes),
            reruns: AtomicU64::new(0),
            limits,
        };
        for (export, at, keywords) in runtime.ask_input_rules()? {
            let Some(found) = runtime.exports.get_mut(&export) else {
                anyhow::bail!("the component states an input rule for {export}, which it lacks");
            };
            found.input_rules.insert(at, keywords);
        }
        Ok(runtime)
    }

    /// The component's input rules as (export, place, keywords), from its `input-rules` export:
    /// run once, in an instance of its own, without a store (the rules read nothing). A component
    /// without the export states no rules.
    fn ask_input_rules(&self) -> anyhow::Result<Vec<InputRule>> {
        let Some(export) = self.exports.get(INPUT_RULES) else {
            return Ok(Vec::new());
        };
        let mut store = self.new_store();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| anyhow!("{e:?}"))
            .context("instantiating the relay component for its input rules")?;
        let func = instance
            .get_func(&mut store, export.index)
            .ok_or_else(|| anyhow!("the component lacks {INPUT_RULES}, which it listed"))?;
        let mut results = vec![Val::Bool(false)];
        func.call(&mut store, &[], &mut results)
            .map_err(|e| anyhow!("{INPUT_RULES} failed: {}", describe_trap(&e)))?;
        input_rules_from(&results[0])
    }

    /// Every exported function, by name.
    pub fn exports(&self) -> &BTreeMap<String, Export> {
        &self.exports
    }

    /// One export by name.
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.exports.get(name)
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The linear memory budget of the calls in flight.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// The store the calls run against.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Runs one export in a fresh instance inside one transaction. Returns the export's own
    /// `result` value; the transaction is committed when it is `ok` and rolled back otherwise.
    ///
    /// # Errors
    /// A trap, timeout or memory exhaustion of the guest, or a store failure.
    pub fn call(&self, export: &Export, args: &[Val]) -> Result<Val, CallFailure> {
        let mut prepared = self.prepare(export.entry())?;
        // Without `later` the call returns only once its writes are committed.
        let ran = self.run_prepared(&mut prepared, args, false)?;
        Ok(ran.value)
    }

    /// A fresh instance for one call of an export, made before the call takes its transaction
    /// (so an executor that runs calls one at a time can have instances made elsewhere).
    ///
    /// # Errors
    /// The instantiation failed (the pool is exhausted, for one).
    pub fn prepare(&self, entry: Entry) -> Result<Prepared, CallFailure> {
        let mut store = self.new_store();
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
            if store.data().memory.refused() {
                CallFailure::OverBudget
            } else {
                CallFailure::Trap(format!("instantiating: {e:?}"))
            }
        })?;
        let func = instance.get_func(&mut store, entry.index).ok_or_else(|| {
            CallFailure::Trap("the component lacks an export it listed".to_owned())
        })?;
        Ok(Prepared { store, func, entry })
    }

    /// Runs a prepared instance's export inside one transaction, but a write's commit may be
    /// left to a batch that is still open: then the call must not be answered before the
    /// returned [`Pending`] is settled. For an executor that runs write calls back to back and
    /// commits once when it runs out of work. The instance is spent afterwards; drop it anywhere.
    ///
    /// # Errors
    /// As for [`Runtime::call`].
    pub fn run(&self, prepared: &mut Prepared, args: &[Val]) -> Result<Ran, CallFailure> {
        self.run_prepared(prepared, args, true)
    }

    /// Runs a prepared instance's export inside one transaction and returns once its writes are
    /// committed.
    ///
    /// # Errors
    /// As for [`Runtime::call`].
    pub fn run_committed(&self, prepared: &mut Prepared, args: &[Val]) -> Result<Ran, CallFailure> {
        self.run_prepared(prepared, args, false)
    }

    fn run_prepared(
        &self,
        prepared: &mut Prepared,
        args: &[Val],
        later: bool,
    ) -> Result<Ran, CallFailure> {
        let mut attempt = 0;
        loop {
            match self.run_once(prepared, args, later) {
                // Lost a serialization race (PostgreSQL): nothing of the run was kept; run the
                // whole call again in a fresh instance, a bounded number of times.
                Err(CallFailure::Store(StoreError::Conflict(why))) if attempt < CONFLICT_RERUNS => {
                    attempt += 1;
                    self.reruns.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(attempt, %why, "the call lost a race with another writer; running it again");
                    std::thread::sleep(conflict_backoff(attempt));
                    *prepared = self.prepare(prepared.entry)?;
                }
                other => return other,
            }
        }
    }

    /// How many calls were run again after losing a serialization race (PostgreSQL); for
    /// `relay-bench`'s retry rate.
    pub fn conflict_reruns(&self) -> u64 {
        self.reruns.load(Ordering::Relaxed)
    }

    fn run_once(
        &self,
        prepared: &mut Prepared,
        args: &[Val],
        later: bool,
    ) -> Result<Ran, CallFailure> {
        let Prepared { store, func, entry } = prepared;
        let session = self
            .backend
            .begin(entry.access)
            .map_err(CallFailure::Store)?;
        store.data_mut().session = Some(session);
        // The deadline counts from here, not from when the instance was made.
        store.set_epoch_deadline(self.deadline_ticks());

        let mut results = vec![Val::Bool(false); entry.returns.into()];
        let outcome = func
            .call(&mut *store, args, &mut results)
            .map_err(|e| describe_trap(&e));
        let session = store.data_mut().session.take();
        // A lost race or a lost connection voids the call, whatever the guest made of it.
        if let Some(broken) = session.as_ref().and_then(|s| s.broken()) {
            if let Some(session) = session {
                let _ = session.finish(false);
            }
            return Err(CallFailure::Store(broken));
        }
        let succeeded = outcome.is_ok() && matches!(results.last(), Some(Val::Result(Ok(_))));
        let wrote = succeeded && session.as_ref().is_some_and(|s| s.wrote());
        let ended = match session {
            None => Err(StoreError::Other(
                "the call's transaction vanished".to_owned(),
            )),
            Some(session) if later => session.finish_later(succeeded),
            Some(session) => session.finish(succeeded).map(|()| None),
        };
        if outcome.is_err() && store.data().memory.refused() {
            // Rolled back like any failed call (`succeeded` is false).
            return Err(CallFailure::OverBudget);
        }
        outcome.map_err(CallFailure::Trap)?;
        let pending = ended.map_err(CallFailure::Store)?;
        let concerns = Concerns {
            keys: std::mem::take(&mut store.data_mut().keys),
            due_at: store.data_mut().due_at.take(),
        };
        Ok(Ran {
            value: results.pop().unwrap_or(Val::Tuple(Vec::new())),
            pending,
            wrote,
            concerns,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        let ticks = (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Measures what [`Runtime::call`] does before it calls the export: creating the `Store`
    /// (WASI context, limits, deadline) and instantiating the component. For the benchmark
    /// (`relay-bench`).
    ///
    /// # Errors
    /// The instantiation failed.
    pub fn time_instantiation(&self) -> Result<Duration, CallFailure> {
        let started = std::time::Instant::now();
        let mut store = self.new_store();
        let instantiated = self.pre.instantiate(&mut store);
        let elapsed = started.elapsed();
        instantiated.map_err(|e| CallFailure::Trap(format!("instantiating: {e:?}")))?;
        Ok(elapsed)
    }

    /// A fresh store for one call, under the limits and the call deadline; the call's session is
    /// put in once the instance is ready.
    fn new_store(&self) -> Store<CallState> {
        let wasi = WasiCtxBuilder::new()
            .wall_clock(self.clock.clone())
            .inherit_stderr()
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            CallState {
                wasi,
                table: ResourceTable::new(),
                memory: CallMemory::new(limits, Arc::clone(&self.memory)),
                session: None,
                keys: Vec::new(),
                too_many_keys: false,
                due_at: None,
            },
        );
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(self.deadline_ticks());
        store
    }
}

/// `list<input-rule>` as (export, place, keywords).
fn input_rules_from(value: &Val) -> anyhow::Result<Vec<InputRule>> {
    let Val::List(rules) = value else {
        anyhow::bail!("{INPUT_RULES} answered something other than a list");
    };
    let text = |fields: &[(String, Val)], name: &str| -> Option<String> {
        fields.iter().find_map(|(field, value)| match value {
            Val::String(text) if field == name => Some(text.clone()),
            Val::Record(inner) if field == name => match inner.as_slice() {
                [(json, Val::String(text))] if json == "json" => Some(text.clone()),
                _ => None,
            },
            _ => None,
        })
    };
    rules
        .iter()
        .map(|rule| {
            let Val::Record(fields) = rule else {
                anyhow::bail!("{INPUT_RULES} answered a rule that is not a record");
            };
            let (Some(export), Some(at), Some(keywords)) = (
                text(fields, "export"),
                text(fields, "at"),
                text(fields, "keywords"),
            ) else {
                anyhow::bail!("{INPUT_RULES} answered a rule without export, at or keywords");
            };
            match serde_json::from_str(&keywords) {
                Ok(Json::Object(map)) => Ok((export, at, map)),
                _ => anyhow::bail!(
                    "the input rule of {export} at {at} is not a JSON object: {keywords}"
                ),
            }
        })
        .collect()
}

/// A short, log-friendly cause for a failed call.
fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            "the call ran past its deadline and was stopped".to_owned()
        }
        Some(trap) => format!("trap: {trap}"),
        // A failed memory growth (the limit) and other host-side causes sit at the chain's root.
        None => format!("{}", error.root_cause()),
    }
}

/// Walks the component's exported interfaces; functions of `*queries` interfaces only read.
fn discover_exports(
    engine: &Engine,
    component: &Component,
) -> anyhow::Result<BTreeMap<String, Export>> {
    let mut exports = BTreeMap::new();
    let ty = component.component_type();
    for (instance_name, item) in ty.exports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        let interface = instance_name
            .rsplit_once('/')
            .map_or(instance_name, |(_, rest)| rest)
            .split('@')
            .next()
            .unwrap_or(instance_name)
            .to_owned();
        let access = if interface.ends_with("queries") {
            Access::Read
        } else {
            Access::Write
        };
        let instance_index = component
            .get_export_index(None, instance_name)
            .ok_or_else(|| anyhow!("export {instance_name} vanished"))?;
        for (name, func) in instance.exports(engine) {
            let ComponentItem::ComponentFunc(func) = func.ty else {
                continue;
            };
            let index = component
                .get_export_index(Some(&instance_index), name)
                .ok_or_else(|| anyhow!("export {instance_name}#{name} vanished"))?;
            let export = Export {
                name: name.to_owned(),
                interface: interface.clone(),
                params: func
                    .params()
                    .map(|(n, t)| (n.to_owned(), Shape::of(&t)))
                    .collect(),
                result: func.results().next().as_ref().map(Shape::of),
                access,
                input_rules: BTreeMap::new(),
                index,
            };
            if exports.insert(name.to_owned(), export).is_some() {
                anyhow::bail!("two exported interfaces define {name}; export names must be unique");
            }
        }
    }
    Ok(exports)
}

/// The compiled component: from the on-disk cache when this exact component was compiled before
/// for this engine, else compiled now (and cached for the next start). Set
/// `RELAY_COMPONENT_CACHE=off` to always compile.
fn load_component(engine: &Engine, component: &[u8]) -> anyhow::Result<Component> {
    let compile = || {
        // Every instance serves one call and is dropped: see `post_return`.
        let bytes = without_post_return(component)?;
        Component::new(engine, &bytes)
            .map_err(|e| anyhow!("{e:?}"))
            .context("compiling the relay component")
    };
    let Some(path) = cache_path(engine, component) else {
        return compile();
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    if path.exists() && trusted_file(&path, dir) {
        // SAFETY: the file was written by `precompile_component` of this same component for an
        // engine with the same compatibility hash (both are in its name), in a directory only
        // this user may write to, and is this user's and writable by nobody else (checked just
        // above); wasmtime still checks the header and refuses a mismatch.
        #[allow(unsafe_code)]
        let cached = unsafe { Component::deserialize_file(engine, &path) };
        if let Ok(component) = cached {
            return Ok(component);
        }
    }
    let component = compile()?;
    if let Ok(bytes) = component.serialize() {
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        if write_private(&temporary, &bytes).is_ok() {
            let _ = std::fs::rename(&temporary, &path);
        }
    }
    Ok(component)
}

/// Writes a new owner-only file whatever the umask: compiled native code is nobody else's (and
/// the agent verbs' memory of whose a token is, `host/src/client/identity.rs`).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// `$XDG_CACHE_HOME/agent-relay/relay-<component hash>-once-<engine hash>.cwasm` (or
/// `$HOME/.cache/agent-relay/...`), in an owner-only directory; `None` (compile every time) when
/// there is no usable place.
fn cache_path(engine: &Engine, component: &[u8]) -> Option<std::path::PathBuf> {
    use sha2::Digest as _;
    use std::hash::{Hash as _, Hasher as _};
    if std::env::var("RELAY_COMPONENT_CACHE").is_ok_and(|v| v == "off") {
        return None;
    }
    let dir = cache_base()?.join("agent-relay");
    if let Err(error) = create_private_dir(&dir) {
        tracing::warn!(
            dir = %dir.display(),
            "not using the compiled-code cache ({error}); the component is compiled at every \
             start: make the folder owner-only (chmod 700) and your own, or remove it"
        );
        return None;
    }
    // `-once`: compiled without post-return functions, for instances that serve one call.
    let component = format!(
        "{}-once",
        hex::encode(&sha2::Sha256::digest(component)[..12])
    );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    Some(dir.join(format!("relay-{component}-{:016x}.cwasm", hasher.finish())))
}

/// The folder caches go in: `XDG_CACHE_HOME`, else `$HOME/.cache`. An empty or relative value
/// counts as unset (the XDG base directory spec says relative paths are invalid), so the cache
/// is never the working directory, wherever the relay runs.
pub fn cache_base() -> Option<std::path::PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(std::path::PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache")))
}

/// Creates the cache folder owner-only, then checks it (and refuses it) as native code will be
/// loaded from it: it must be this user's and writable by nobody else.
#[cfg(unix)]
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    // Refuse a cache others could have written native code into.
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "the folder is group- or world-writable (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    if meta.uid() != own_uid(dir)? {
        return Err(std::io::Error::other(format!(
            "the folder belongs to uid {}, not this user, and is writable by its owner",
            meta.uid()
        )));
    }
    Ok(())
}

/// Whether a cached file may be loaded: a plain file (not a link), owned like its folder (which
/// [`create_private_dir`] found to be this user's) and writable by nobody else.
#[cfg(unix)]
fn trusted_file(path: &std::path::Path, dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(meta), Ok(folder)) = (std::fs::symlink_metadata(path), std::fs::metadata(dir)) else {
        return false;
    };
    meta.is_file() && meta.mode() & 0o022 == 0 && meta.uid() == folder.uid()
}

#[cfg(not(unix))]
fn trusted_file(path: &std::path::Path, _: &std::path::Path) -> bool {
    path.is_file()
}

/// The uid that owns files this process creates, read from a probe file (no libc needed). Made
/// only in a folder already known to be writable by its owner alone.
#[cfg(unix)]
fn own_uid(dir: &std::path::Path) -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let probe = dir.join(format!(".owner-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    let uid = std::fs::metadata(&probe)?.uid();
    let _ = std::fs::remove_file(&probe);
    Ok(uid)
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
