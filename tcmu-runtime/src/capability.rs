//! An opened handler and what it can do: [`Handler`], built once per device
//! with [`Handler::new`] and the [`HandlerBuilder`]'s declarations.
//!
//! The capabilities a handler declares are recorded here and nowhere else.
//! The device's VPD pages (Logical Block Provisioning, Block Limits, …) and
//! the dispatch of each command both read this record, so what the device
//! advertises is what it does. Capabilities only ever go away: when a
//! declared operation answers [`BlockError::Unsupported`](crate::BlockError::Unsupported),
//! the runtime withdraws it ([`Handler::withdraw`]), updating what the VPD
//! pages say and what dispatch does in the same step, and tells initiators
//! with a unit attention (INQUIRY DATA HAS CHANGED).

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use tcmu_scsi::{DeviceParams, UnmapParams};

use crate::handler::{
    BlockHandler, CommandHook, CompareAndWrite, CopyOffload, LbaStatus, Unmap, WriteSame,
};

/// An optional ability of a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// UNMAP, and WRITE SAME with UNMAP ([`Unmap`]).
    Unmap,
    /// Native WRITE SAME ([`WriteSame`]).
    WriteSame,
    /// Native COMPARE AND WRITE ([`CompareAndWrite`]).
    CompareAndWrite,
    /// Copies inside the backend ([`CopyOffload`]).
    CopyOffload,
    /// GET LBA STATUS from the backend ([`LbaStatus`]).
    LbaStatus,
    /// Sees every command first ([`CommandHook`]).
    Commands,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 6] = [
        Capability::Unmap,
        Capability::WriteSame,
        Capability::CompareAndWrite,
        Capability::CopyOffload,
        Capability::LbaStatus,
        Capability::Commands,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Unmap => "unmap",
            Capability::WriteSame => "write same",
            Capability::CompareAndWrite => "compare and write",
            Capability::CopyOffload => "copy offload",
            Capability::LbaStatus => "lba status",
            Capability::Commands => "sees commands",
        })
    }
}

/// A change a handler makes to its device's SCSI parameters.
type ParamsChange = Box<dyn FnOnce(&mut DeviceParams)>;

/// What a handler declared: the capability objects (all the backend
/// itself, seen through the capability's trait) and properties.
#[derive(Default)]
struct Declared {
    unmap: Option<(Rc<dyn Unmap>, UnmapParams)>,
    write_same: Option<Rc<dyn WriteSame>>,
    compare_and_write: Option<Rc<dyn CompareAndWrite>>,
    copy_offload: Option<Rc<dyn CopyOffload>>,
    lba_status: Option<Rc<dyn LbaStatus>>,
    hook: Option<Rc<dyn CommandHook>>,
    write_cache: bool,
    /// Changes to the SCSI parameters the generic layer answers from.
    params: Option<ParamsChange>,
    /// Bits of the declared [`Capability`]s.
    caps: u8,
}

/// An opened device's handler: the backend and the capabilities it
/// declared. Made by [`HandlerFactory::open`](crate::HandlerFactory::open)
/// with [`Handler::new`].
pub struct Handler {
    block: Rc<dyn BlockHandler>,
    declared: Declared,
    /// Capabilities declared and not withdrawn (bits of [`Capability`]).
    active: Cell<u8>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caps: Vec<Capability> = self.capabilities().collect();
        f.debug_struct("Handler")
            .field("capabilities", &caps)
            .field("write_cache", &self.declared.write_cache)
            .finish()
    }
}

impl Handler {
    /// Starts declaring the handler of a device served by `backend`; finish
    /// with [`HandlerBuilder::build`] (or `.into()`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new<H: BlockHandler + 'static>(backend: H) -> HandlerBuilder<H> {
        HandlerBuilder {
            inner: Rc::new(backend),
            declared: Declared::default(),
        }
    }

    /// The backend.
    pub fn block(&self) -> &dyn BlockHandler {
        self.block.as_ref()
    }

    /// Whether `cap` was declared and not withdrawn.
    pub fn has(&self, cap: Capability) -> bool {
        self.active.get() & cap.bit() != 0
    }

    /// The capabilities declared and not withdrawn.
    pub fn capabilities(&self) -> impl Iterator<Item = Capability> + '_ {
        Capability::ALL.into_iter().filter(|c| self.has(*c))
    }

    /// Whether the backend keeps acknowledged writes in a volatile cache
    /// until `flush` ([`HandlerBuilder::volatile_write_cache`]).
    pub fn has_write_cache(&self) -> bool {
        self.declared.write_cache
    }

    /// Applies what [`HandlerBuilder::device_params`] declared (once, at
    /// open).
    pub(crate) fn adjust_params(&mut self, params: &mut DeviceParams) {
        if let Some(f) = self.declared.params.take() {
            f(params);
        }
    }

    /// Stops using `cap`; returns whether it was active. The runtime calls
    /// this when a declared operation answers `Unsupported`, and updates
    /// the device's SCSI parameters from [`unmap_params`](Self::unmap_params)
    /// in the same step.
    pub fn withdraw(&self, cap: Capability) -> bool {
        let was = self.has(cap);
        self.active.set(self.active.get() & !cap.bit());
        was
    }

    /// The UNMAP limits to advertise, while UNMAP is active.
    pub fn unmap_params(&self) -> Option<UnmapParams> {
        self.unmap().map(|(_, p)| p.clone())
    }

    pub(crate) fn unmap(&self) -> Option<(&dyn Unmap, &UnmapParams)> {
        self.active_of(Capability::Unmap, &self.declared.unmap)
            .map(|(u, p)| (u.as_ref(), p))
    }

    pub(crate) fn write_same(&self) -> Option<&dyn WriteSame> {
        self.active_of(Capability::WriteSame, &self.declared.write_same)
            .map(Rc::as_ref)
    }

    pub(crate) fn compare_and_write(&self) -> Option<&dyn CompareAndWrite> {
        self.active_of(
            Capability::CompareAndWrite,
            &self.declared.compare_and_write,
        )
        .map(Rc::as_ref)
    }

    pub(crate) fn copy_offload(&self) -> Option<&dyn CopyOffload> {
        self.active_of(Capability::CopyOffload, &self.declared.copy_offload)
            .map(Rc::as_ref)
    }

    pub(crate) fn lba_status(&self) -> Option<&dyn LbaStatus> {
        self.active_of(Capability::LbaStatus, &self.declared.lba_status)
            .map(Rc::as_ref)
    }

    pub(crate) fn hook(&self) -> Option<&dyn CommandHook> {
        self.active_of(Capability::Commands, &self.declared.hook)
            .map(Rc::as_ref)
    }

    fn active_of<'a, T>(&self, cap: Capability, slot: &'a Option<T>) -> Option<&'a T> {
        slot.as_ref().filter(|_| self.has(cap))
    }
}

/// The backend's `read`, `write`, `flush`… straight from the handler.
impl std::ops::Deref for Handler {
    type Target = dyn BlockHandler;

    fn deref(&self) -> &Self::Target {
        self.block.as_ref()
    }
}

/// Declares what a handler can do beyond `read`, `write` and `flush`; each
/// method needs the matching trait implementation. Made by
/// [`Handler::new`].
#[must_use = "a handler is declared only once `build` (or `into`) makes the Handler"]
pub struct HandlerBuilder<H> {
    inner: Rc<H>,
    declared: Declared,
}

impl<H> fmt::Debug for HandlerBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerBuilder")
            .field("caps", &self.declared.caps)
            .finish()
    }
}

impl<H: BlockHandler + 'static> HandlerBuilder<H> {
    /// The backend, to decide what to declare from what it found at open.
    pub fn backend(&self) -> &H {
        &self.inner
    }

    fn declare(mut self, cap: Capability, set: impl FnOnce(&mut Declared, Rc<H>)) -> Self {
        set(&mut self.declared, self.inner.clone());
        self.declared.caps |= cap.bit();
        self
    }

    /// Thin provisioning: UNMAP and WRITE SAME with UNMAP, advertised with
    /// [`Unmap::unmap_params`] (read now).
    pub fn unmap(self) -> Self
    where
        H: Unmap,
    {
        self.declare(Capability::Unmap, |d, inner| {
            let params = inner.unmap_params();
            d.unmap = Some((inner, params));
        })
    }

    /// A native WRITE SAME.
    pub fn write_same(self) -> Self
    where
        H: WriteSame,
    {
        self.declare(Capability::WriteSame, |d, inner| d.write_same = Some(inner))
    }

    /// A native, atomic COMPARE AND WRITE.
    pub fn compare_and_write(self) -> Self
    where
        H: CompareAndWrite,
    {
        self.declare(Capability::CompareAndWrite, |d, inner| {
            d.compare_and_write = Some(inner)
        })
    }

    /// Copies inside the backend.
    pub fn copy_offload(self) -> Self
    where
        H: CopyOffload,
    {
        self.declare(Capability::CopyOffload, |d, inner| {
            d.copy_offload = Some(inner)
        })
    }

    /// GET LBA STATUS from the backend's allocation map.
    pub fn lba_status(self) -> Self
    where
        H: LbaStatus,
    {
        self.declare(Capability::LbaStatus, |d, inner| d.lba_status = Some(inner))
    }

    /// Sees every command first ([`CommandHook::handle_cmd`]).
    pub fn commands(self) -> Self
    where
        H: CommandHook,
    {
        self.declare(Capability::Commands, |d, inner| d.hook = Some(inner))
    }

    /// The backend keeps acknowledged writes in a volatile cache (the page
    /// cache, say) until `flush`. The device then reports its write cache
    /// as enabled (WCE=1), like tcmu-runner's file handler, and relies on
    /// SYNCHRONIZE CACHE and FUA for durability; otherwise the kernel's
    /// `emulate_write_cache` attribute decides.
    pub fn volatile_write_cache(mut self) -> Self {
        self.declared.write_cache = true;
        self
    }

    /// Changes the SCSI parameters the generic layer answers from (the
    /// device's identity, limits and characteristics: vendor and product,
    /// transfer limits, a solid-state medium, …), applied once when the
    /// device starts, after the runtime filled them from configfs. The
    /// runtime keeps what capabilities decide (UNMAP) in line with the
    /// declarations.
    pub fn device_params(mut self, f: impl FnOnce(&mut DeviceParams) + 'static) -> Self {
        self.declared.params = Some(Box::new(f));
        self
    }

    /// The declared handler.
    pub fn build(self) -> Handler {
        let caps = self.declared.caps;
        Handler {
            block: self.inner,
            declared: self.declared,
            active: Cell::new(caps),
        }
    }
}

impl<H: BlockHandler + 'static> From<HandlerBuilder<H>> for Handler {
    fn from(b: HandlerBuilder<H>) -> Self {
        b.build()
    }
}
