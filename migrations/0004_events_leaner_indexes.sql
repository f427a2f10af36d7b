-- Cheaper appends: every event row pays for each check and index on `events`.

-- Event types are validated by the codec before they are written; a length check keeps the column
-- sane without running a regular expression per row.
alter table events drop constraint events_event_type_check;
alter table events add constraint events_event_type_length check (char_length(event_type) between 2 and 64);

-- Unsequenced rows (position NULL) need no entry in the position index: readers only ever ask for
-- `position > …`, which implies NOT NULL, so the partial index serves them all.
alter table events drop constraint events_position_key;
create unique index events_position_key on events (position) where position is not null;
