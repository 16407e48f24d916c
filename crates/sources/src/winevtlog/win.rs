//! The real Windows Event Log behind [`EventLogApi`]: thin wevtapi calls, nothing decided
//! here (the loop in `mod.rs` decides). Every handle is an owned value closed by `Drop`.
//!
//! Under Wine 8 wevtapi is a stub: `EvtSubscribe` returns NULL (and `GetLastError` is
//! unreliable), so [`WinApi::subscribe`] reports an error there; the tests check that this
//! is a clear error and not a panic. Nothing below is exercised against a real Event Log
//! by the tests of this repository.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, ERROR_EVT_CHANNEL_NOT_FOUND, ERROR_EVT_INVALID_QUERY,
    ERROR_EVT_UNRESOLVED_VALUE_INSERT, ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_ITEMS,
    ERROR_TIMEOUT, GetLastError, HANDLE, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::EventLog::{
    EVT_HANDLE, EvtClose, EvtCreateBookmark, EvtFormatMessage, EvtFormatMessageEvent, EvtNext,
    EvtOpenPublisherMetadata, EvtRender, EvtRenderBookmark, EvtRenderEventXml, EvtSubscribe,
    EvtSubscribeStartAfterBookmark, EvtSubscribeStartAtOldestRecord, EvtSubscribeToFutureEvents,
    EvtUpdateBookmark,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, ResetEvent, SetEvent, WaitForMultipleObjects, WaitForSingleObject,
};

use super::{ApiError, ApiErrorKind, EventLogApi, MAX_CHANNELS, Start, StopHandle, Wake};

/// Publisher metadata handles kept (one per provider seen).
const MAX_PUBLISHERS: usize = 1024;
/// How long `EvtNext` may wait for the service (it returns at once when events are there).
const NEXT_TIMEOUT_MS: u32 = 1000;

/// An `EVT_HANDLE`, closed on drop.
#[derive(Debug)]
pub struct EvtHandle(EVT_HANDLE);

impl Drop for EvtHandle {
    fn drop(&mut self) {
        if self.0 != 0 {
            // SAFETY: the handle came from a wevtapi call and is closed once, here.
            unsafe { EvtClose(self.0) };
        }
    }
}

/// A manual-reset kernel event, closed on drop.
#[derive(Debug)]
struct KernelEvent(HANDLE);

// SAFETY: an event handle may be used (set, reset, waited on, closed) from any thread.
unsafe impl Send for KernelEvent {}
// SAFETY: as above; SetEvent and waits are thread-safe.
unsafe impl Sync for KernelEvent {}

impl KernelEvent {
    fn new(signaled: bool) -> Result<KernelEvent, ApiError> {
        // SAFETY: no security attributes, no name; the result is checked.
        let h = unsafe { CreateEventW(ptr::null(), 1, i32::from(signaled), ptr::null()) };
        if h.is_null() {
            return Err(last_error("CreateEventW"));
        }
        Ok(KernelEvent(h))
    }
}

impl Drop for KernelEvent {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and closed once, here.
        unsafe { CloseHandle(self.0) };
    }
}

/// A subscription: its handle and its signal event.
#[derive(Debug)]
pub struct Subscription {
    // Field order: the subscription closes before its signal event.
    handle: EvtHandle,
    signal: KernelEvent,
}

/// The real API.
#[derive(Debug)]
pub struct WinApi {
    stop: Arc<KernelEvent>,
    /// Publisher metadata by provider name (`None`: it cannot be opened).
    publishers: HashMap<String, Option<EvtHandle>>,
}

impl WinApi {
    /// Creates the stop event.
    pub fn new() -> Result<WinApi, ApiError> {
        Ok(WinApi {
            stop: Arc::new(KernelEvent::new(false)?),
            publishers: HashMap::new(),
        })
    }

    fn publisher(&mut self, provider: &str) -> Option<EVT_HANDLE> {
        if !self.publishers.contains_key(provider) {
            if self.publishers.len() >= MAX_PUBLISHERS {
                self.publishers.clear();
            }
            let name = wide(provider);
            // SAFETY: `name` is NUL-terminated and outlives the call; local session, no
            // log file, the user's locale.
            let h = unsafe { EvtOpenPublisherMetadata(0, name.as_ptr(), ptr::null(), 0, 0) };
            if h == 0 {
                tracing::debug!(provider, error = %last_error("EvtOpenPublisherMetadata"),
                    "windows_event_log: no message table for this provider");
            }
            self.publishers
                .insert(provider.to_owned(), (h != 0).then_some(EvtHandle(h)));
        }
        self.publishers.get(provider)?.as_ref().map(|h| h.0)
    }
}

impl EventLogApi for WinApi {
    type Subscription = Subscription;
    type Event = EvtHandle;
    type Bookmark = EvtHandle;

    fn subscribe(
        &mut self,
        channel: &str,
        query: &str,
        start: Start<'_, EvtHandle>,
    ) -> Result<Subscription, ApiError> {
        // Signalled at first, so the first wait pulls what is already there.
        let signal = KernelEvent::new(true)?;
        let (flags, bookmark) = match start {
            Start::AfterBookmark(b) => (EvtSubscribeStartAfterBookmark, b.0),
            Start::Oldest => (EvtSubscribeStartAtOldestRecord, 0),
            Start::Future => (EvtSubscribeToFutureEvents, 0),
        };
        let (c, q) = (wide(channel), wide(query));
        // SAFETY: strings are NUL-terminated and outlive the call; no callback (pull
        // mode) and no context; the signal event and bookmark are valid handles.
        let h = unsafe {
            EvtSubscribe(
                0,
                signal.0,
                c.as_ptr(),
                q.as_ptr(),
                bookmark,
                ptr::null(),
                None,
                flags,
            )
        };
        if h == 0 {
            return Err(last_error("EvtSubscribe"));
        }
        Ok(Subscription {
            handle: EvtHandle(h),
            signal,
        })
    }

    fn wait(&mut self, subs: &[&Subscription], timeout: Duration) -> Wake {
        let mut handles: Vec<HANDLE> = Vec::with_capacity(subs.len() + 1);
        handles.push(self.stop.0);
        handles.extend(subs.iter().take(MAX_CHANNELS).map(|s| s.signal.0));
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1);
        // SAFETY: every handle is a live event; at most 64 handles; wait for any.
        let r = unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), 0, ms) };
        match r {
            WAIT_OBJECT_0 => Wake::Stop,
            WAIT_TIMEOUT => Wake::Timeout,
            WAIT_FAILED => {
                tracing::warn!(error = %last_error("WaitForMultipleObjects"), "windows_event_log: wait failed");
                std::thread::sleep(timeout.min(Duration::from_secs(1)));
                Wake::Timeout
            }
            _ => {
                for s in subs {
                    // SAFETY: a live manual-reset event.
                    unsafe { ResetEvent(s.signal.0) };
                }
                Wake::Ready
            }
        }
    }

    fn stop_requested(&self) -> bool {
        // SAFETY: a live event, polled without waiting.
        unsafe { WaitForSingleObject(self.stop.0, 0) == WAIT_OBJECT_0 }
    }

    fn stop_handle(&self) -> StopHandle {
        let stop = self.stop.clone();
        StopHandle::new(move || {
            // SAFETY: the Arc keeps the event alive.
            unsafe { SetEvent(stop.0) };
        })
    }

    fn next(&mut self, sub: &mut Subscription, max: usize) -> Result<Vec<EvtHandle>, ApiError> {
        let mut buf: Vec<EVT_HANDLE> = vec![0; max.max(1)];
        let mut returned = 0u32;
        // SAFETY: `buf` has room for `buf.len()` handles; `returned` is written.
        let ok = unsafe {
            EvtNext(
                sub.handle.0,
                buf.len() as u32,
                buf.as_mut_ptr(),
                NEXT_TIMEOUT_MS,
                0,
                &mut returned,
            )
        };
        if ok == 0 {
            // SAFETY: reads the thread's last error.
            let code = unsafe { GetLastError() };
            if code == ERROR_NO_MORE_ITEMS || code == ERROR_TIMEOUT {
                return Ok(Vec::new());
            }
            return Err(error(code, "EvtNext"));
        }
        buf.truncate(returned as usize);
        Ok(buf.into_iter().map(EvtHandle).collect())
    }

    fn render_xml(&mut self, event: &EvtHandle) -> Result<String, ApiError> {
        render(event.0, EvtRenderEventXml, "EvtRender(EvtRenderEventXml)")
    }

    fn format_message(&mut self, event: &EvtHandle, provider: &str) -> Option<String> {
        let meta = self.publisher(provider)?;
        let mut used = 0u32;
        // SAFETY: size query with an empty buffer.
        let ok = unsafe {
            EvtFormatMessage(
                meta,
                event.0,
                0,
                0,
                ptr::null(),
                EvtFormatMessageEvent,
                0,
                ptr::null_mut(),
                &mut used,
            )
        };
        // SAFETY: reads the thread's last error.
        if ok != 0 || unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER || used == 0 {
            return None;
        }
        let mut buf = vec![0u16; used as usize];
        // SAFETY: `buf` holds `used` UTF-16 units, as the size query asked.
        let ok = unsafe {
            EvtFormatMessage(
                meta,
                event.0,
                0,
                0,
                ptr::null(),
                EvtFormatMessageEvent,
                used,
                buf.as_mut_ptr(),
                &mut used,
            )
        };
        // A message whose inserts did not all resolve is still the message.
        // SAFETY: reads the thread's last error.
        if ok == 0 && unsafe { GetLastError() } != ERROR_EVT_UNRESOLVED_VALUE_INSERT {
            return None;
        }
        let text = from_wide(&buf);
        (!text.trim().is_empty()).then_some(text)
    }

    fn create_bookmark(&mut self, xml: Option<&str>) -> Result<EvtHandle, ApiError> {
        let w = xml.map(wide);
        let p = w.as_ref().map_or(ptr::null(), |w| w.as_ptr());
        // SAFETY: `p` is NULL or a NUL-terminated string that outlives the call.
        let h = unsafe { EvtCreateBookmark(p) };
        if h == 0 {
            return Err(last_error("EvtCreateBookmark"));
        }
        Ok(EvtHandle(h))
    }

    fn update_bookmark(
        &mut self,
        bookmark: &mut EvtHandle,
        event: &EvtHandle,
    ) -> Result<(), ApiError> {
        // SAFETY: both are live handles.
        if unsafe { EvtUpdateBookmark(bookmark.0, event.0) } == 0 {
            return Err(last_error("EvtUpdateBookmark"));
        }
        Ok(())
    }

    fn bookmark_xml(&mut self, bookmark: &EvtHandle) -> Result<String, ApiError> {
        render(
            bookmark.0,
            EvtRenderBookmark,
            "EvtRender(EvtRenderBookmark)",
        )
    }
}

/// `EvtRender` of an event or bookmark as XML text.
fn render(h: EVT_HANDLE, flags: u32, what: &str) -> Result<String, ApiError> {
    let (mut used, mut props) = (0u32, 0u32);
    // SAFETY: size query with an empty buffer.
    let ok = unsafe { EvtRender(0, h, flags, 0, ptr::null_mut(), &mut used, &mut props) };
    if ok != 0 {
        return Ok(String::new());
    }
    // SAFETY: reads the thread's last error.
    let code = unsafe { GetLastError() };
    if code != ERROR_INSUFFICIENT_BUFFER {
        return Err(error(code, what));
    }
    // `used` is in bytes; the text is UTF-16.
    let mut buf = vec![0u16; (used as usize).div_ceil(2)];
    let size = (buf.len() * 2) as u32;
    // SAFETY: `buf` holds `size` bytes.
    let ok = unsafe {
        EvtRender(
            0,
            h,
            flags,
            size,
            buf.as_mut_ptr().cast(),
            &mut used,
            &mut props,
        )
    };
    if ok == 0 {
        return Err(last_error(what));
    }
    buf.truncate((used as usize) / 2);
    Ok(from_wide(&buf))
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

fn last_error(what: &str) -> ApiError {
    // SAFETY: reads the thread's last error.
    error(unsafe { GetLastError() }, what)
}

fn error(code: u32, what: &str) -> ApiError {
    let kind = match code {
        ERROR_EVT_CHANNEL_NOT_FOUND => ApiErrorKind::ChannelNotFound,
        ERROR_ACCESS_DENIED => ApiErrorKind::AccessDenied,
        ERROR_EVT_INVALID_QUERY => ApiErrorKind::InvalidQuery,
        _ => ApiErrorKind::Other,
    };
    let detail = if code == 0 {
        "failed without an error code (Wine's wevtapi is a stub)".to_owned()
    } else {
        std::io::Error::from_raw_os_error(code as i32).to_string()
    };
    ApiError::new(kind, code, format!("{what} failed: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_strings_round_trip() {
        let w = wide("Microsoft-Windows-Sysmon/Operational ✓");
        assert_eq!(*w.last().unwrap(), 0);
        assert_eq!(from_wide(&w), "Microsoft-Windows-Sysmon/Operational ✓");
        assert_eq!(
            error(ERROR_EVT_CHANNEL_NOT_FOUND, "x").kind,
            ApiErrorKind::ChannelNotFound
        );
        assert_eq!(error(5, "x").kind, ApiErrorKind::AccessDenied);
        assert!(
            error(0, "EvtSubscribe")
                .message
                .contains("without an error code")
        );
    }
}
