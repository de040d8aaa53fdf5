"""The token bookkeeping of MongoTaskStore: collection `issuedTokens`, one document per jti."""

from typing import Final

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from shared.clock import now_iso
from shared.errors import StoreError
from shared.store import TokenRecord
from shared.store.mongo.documents import Document

TOKENS: Final = "issuedTokens"
TOKEN_INDEXES: Final = [
    IndexModel([("jti", ASCENDING)], name="ux_jti", unique=True),
    IndexModel([("issued_at", DESCENDING), ("jti", DESCENDING)], name="ix_issued"),
    IndexModel(
        [("revoked_at", ASCENDING)],
        name="ix_revoked",
        partialFilterExpression={"revoked_at": {"$type": "string"}},
    ),
]
_PROJECTION: Final = {"_id": False}


def _to_token(document: Document) -> TokenRecord:
    drones = document.get("drones")
    return TokenRecord(
        jti=document["jti"],
        sub=document.get("sub"),
        role=document.get("role"),
        drones=None if drones is None else tuple(drones),
        issued_at=document.get("issued_at"),
        expires_at=document.get("expires_at"),
        revoked_at=document.get("revoked_at"),
    )


async def record_token(tokens: AsyncCollection[Document], token: TokenRecord) -> None:
    fields = {
        "sub": token.sub,
        "role": token.role,
        "drones": None if token.drones is None else list(token.drones),
        "issued_at": token.issued_at,
        "expires_at": token.expires_at,
    }
    await tokens.update_one({"jti": token.jti}, {"$set": fields}, upsert=True)


async def revoke_token(tokens: AsyncCollection[Document], jti: str) -> TokenRecord:
    # A pipeline update, so the first revoked_at stays, in one atomic upsert.
    document = await tokens.find_one_and_update(
        {"jti": jti},
        [{"$set": {"revoked_at": {"$ifNull": ["$revoked_at", now_iso()]}}}],
        projection=_PROJECTION,
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    if document is None:  # an upsert always returns the document
        raise StoreError(f"revoking {jti} returned no document")
    return _to_token(document)


async def list_tokens(tokens: AsyncCollection[Document], limit: int) -> list[TokenRecord]:
    if limit < 1:
        return []
    cursor = tokens.find({}, _PROJECTION).sort([("issued_at", DESCENDING), ("jti", DESCENDING)])
    return [_to_token(document) async for document in cursor.limit(limit)]


async def token_revoked(tokens: AsyncCollection[Document], jti: str) -> bool:
    found = await tokens.find_one({"jti": jti, "revoked_at": {"$type": "string"}}, {"_id": True})
    return found is not None


async def revoked_since(tokens: AsyncCollection[Document], since: str) -> list[str]:
    cursor = tokens.find({"revoked_at": {"$gte": since}}, {"_id": False, "jti": True}).sort(
        "revoked_at", ASCENDING
    )
    return [document["jti"] async for document in cursor]
