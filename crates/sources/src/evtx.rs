//! EVTX files (`.evtx`), read with the `evtx` crate: each record's XML goes through
//! [`crate::winevent::parse_event_xml`], so events have the same shape as the live
//! Windows Event Log source. A corrupt chunk or record is reported with its place and
//! skipped; the rest of the file is still read.

use watchpost_event::{Event, Origin};

use crate::parse::{ParseCtx, ParseError};
use crate::winevent::parse_event_xml_owned;

/// The file signature at offset 0.
pub const MAGIC: &[u8; 8] = b"ElfFile\0";

/// Whether `head` starts like an EVTX file.
pub fn is_evtx(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Events of an EVTX file's bytes, in file order, and the records that failed with
/// their record id (or 0 when the failure is not tied to one record).
pub fn read_evtx(
    ctx: &ParseCtx,
    bytes: Vec<u8>,
    place: &str,
) -> (Vec<Event>, Vec<(u64, ParseError)>) {
    let mut events = Vec::new();
    let errors = for_each_evtx(ctx, bytes, place, &mut |e| events.push(e));
    (events, errors)
}

/// Streams the events of an EVTX file's bytes to `sink` in file order (one event in
/// memory at a time, however large the file); returns the records that failed with their
/// record id (or 0 when the failure is not tied to one record).
pub fn for_each_evtx(
    ctx: &ParseCtx,
    bytes: Vec<u8>,
    place: &str,
    sink: &mut dyn FnMut(Event),
) -> Vec<(u64, ParseError)> {
    let mut errors = Vec::new();
    let settings = evtx::ParserSettings::new().indent(false);
    let mut parser = match evtx::EvtxParser::from_buffer(bytes) {
        Ok(p) => p.with_configuration(settings),
        Err(e) => {
            errors.push((
                0,
                ParseError::new(0, format!("not a readable EVTX file: {e}")),
            ));
            return errors;
        }
    };
    let place: std::sync::Arc<str> = place.into();
    for record in parser.records() {
        match record {
            Ok(r) => match parse_event_xml_owned(ctx, r.data) {
                Ok(mut e) => {
                    e.origin = Some(Origin {
                        place: place.clone(),
                        offset: r.event_record_id,
                    });
                    sink(e);
                }
                Err(e) => errors.push((r.event_record_id, e)),
            },
            Err(e) => errors.push((
                0,
                ParseError::new(0, format!("corrupt EVTX record or chunk skipped: {e}")),
            )),
        }
    }
    errors
}
