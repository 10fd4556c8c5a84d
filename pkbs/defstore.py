"""Job definitions in the KV bucket PKBS_DEFS: one key per version,
`d.<name>.<version>`, each holding the Definition of that version.

- Applying stores the next version: one more than the highest ever stored under the
  name (deleted ones count, so a number never names two definitions), created only
  if its key has never been written (a compare-and-set on revision 0). Two applies
  at once get distinct versions: the later one finds the key taken and takes the next.
- The newest version is the highest stored; if its key is deleted, the definition is
  (deleting one deletes every version, and an apply always stores above them all).
- Every read goes to the KV: a definition applied through any dispatcher replica is
  used by the next request of any other, with no restart.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from nats.js import JetStreamContext
from nats.js import errors as jserr
from nats.js.kv import KeyValue

from pkbs import constants as C
from pkbs.definitions import Definition
from pkbs.errors import Conflict, UnknownDefinition

CAS_ATTEMPTS = 50
SUBJECT_PREFIX = f"$KV.{C.DEFINITIONS_BUCKET}.{C.DEFINITION_KEY_PREFIX}"


def definition_key(name: str, version: int) -> str:
    return f"{C.DEFINITION_KEY_PREFIX}{name}.{version}"


def unknown(name: str, version: int | None = None) -> UnknownDefinition:
    asked = name if version is None else f"{name}@{version}"
    return UnknownDefinition(f"Unknown job definition {asked}")


class DefinitionStore:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> DefinitionStore:
        """The store over the bucket pkbs.jobstore.ensure_layout made."""
        return cls(js, await js.key_value(C.DEFINITIONS_BUCKET))

    async def stored_versions(self, name: str | None = None) -> dict[str, list[int]]:
        """Name -> every version stored under it, deleted ones too, ascending (of one
        name, or of all): the bucket's subjects, from one stream-info request."""
        pattern = f"{SUBJECT_PREFIX}{name or '*'}.*"
        info = await self.js.stream_info(
            f"KV_{C.DEFINITIONS_BUCKET}", subjects_filter=pattern
        )
        versions: dict[str, list[int]] = defaultdict(list)
        for subject in info.state.subjects or {}:
            stored_name, _, version = subject[len(SUBJECT_PREFIX) :].rpartition(".")
            if version.isdigit():
                versions[stored_name].append(int(version))
        return {key: sorted(numbers) for key, numbers in versions.items()}

    async def apply(self, definition: Definition) -> Definition:
        """Store `definition` as the next version of its name; the stored one."""
        name = definition.name
        for _ in range(CAS_ATTEMPTS):
            versions = (await self.stored_versions(name)).get(name, [0])
            version = versions[-1] + 1
            stored = definition.model_copy(update={"version": version})
            try:
                await self.kv.update(
                    definition_key(name, version),
                    stored.model_dump_json().encode(),
                    last=0,
                )
            except jserr.KeyWrongLastSequenceError:
                continue  # applied at the same time elsewhere: take the next number
            return stored
        raise Conflict(f"job definition {name}: concurrent applies, retry")

    async def get(self, name: str, version: int | None = None) -> Definition:
        """The definition `name` in `version`, or its newest; UnknownDefinition."""
        if version is None:
            versions = (await self.stored_versions(name)).get(name)
            if not versions:
                raise unknown(name)
            found = await self._read(name, versions[-1])
        else:
            found = await self._read(name, version)
        if found is None:
            raise unknown(name, version)
        return found

    async def _read(self, name: str, version: int) -> Definition | None:
        try:
            entry = await self.kv.get(definition_key(name, version))
        except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
            return None
        if not entry.value:
            return None
        return Definition.model_validate_json(entry.value)

    async def newest(self) -> list[Definition]:
        """The newest version of every definition, by name."""
        versions = await self.stored_versions()
        names = sorted(versions)
        found = await asyncio.gather(*(self._read(n, versions[n][-1]) for n in names))
        return [definition for definition in found if definition is not None]

    async def delete(self, name: str) -> None:
        """Delete every version of `name`; UnknownDefinition if it has none."""
        versions = (await self.stored_versions(name)).get(name, [])
        if not versions or await self._read(name, versions[-1]) is None:
            raise unknown(name)
        await asyncio.gather(*(self.kv.delete(definition_key(name, v)) for v in versions))
