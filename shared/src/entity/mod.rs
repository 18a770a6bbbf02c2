//! sea-orm entities (`DeriveEntityModel`) of the tables that are read and written one row, or
//! one filtered page, at a time: the api's lists with filters and cursors and its single-row
//! writes use them. Three types, not one: an entity is the row, the message contract and the
//! HTTP body are separate types with `From` between them. Raw statements stay where one
//! statement does a whole batch's work (the command worker's upserts, the sequencer's CTE, the
//! notification worker's insert), each with a comment saying why.

pub mod activity;
pub mod composition;
pub mod episode;
pub mod file;
pub mod job;
pub mod notification;
