"""Request and response bodies of the users, sessions and application members API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.validation import Text

Role = Literal["owner", "administrator", "user"]
GrantableRole = Literal["administrator", "user"]


class LoginBody(BaseModel):
    email: Text = Field(max_length=254)
    password: Text = Field(max_length=1024)


class SetupBody(LoginBody):
    admin_token: Text = Field(max_length=1024, description="the admin token printed on the first start")


class UserCreate(LoginBody):
    global_role: GrantableRole = "user"


class UserUpdate(BaseModel):
    global_role: GrantableRole | None = None
    password: Text | None = Field(None, max_length=1024)


class UserOut(BaseModel):
    id: int
    email: str
    global_role: Role
    created_at: str


class UsersPage(BaseModel):
    users: list[UserOut]
    total: int


class Me(BaseModel):
    user: UserOut | None = Field(description="None for the admin token")
    csrf_token: str | None
    applications: dict[int, Role] = Field(description="the user's role per application id")


class SetupState(BaseModel):
    needs_owner: bool


class MemberBody(BaseModel):
    email: Text = Field(max_length=254, description="the user's e-mail")
    role: Role


class MemberOut(BaseModel):
    user: UserOut
    role: Role
