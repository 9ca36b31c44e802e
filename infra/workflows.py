"""The backup and restore state machines (JSONPath, so moto can run them), per docs/serverless.md."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from infra import constants as names
from infra.fargate import HEARTBEAT_SECONDS, TASK_TIMEOUT_HOURS, FargatePath
from infra.functions import BackupFunctions

_LAMBDA_ERRORS = [error for error in names.TRANSIENT_ERRORS if error.startswith("Lambda.")]


def invoke(
    scope: Construct,
    state_name: str,
    function: lambda_.IFunction,
    payload: dict[str, Any] | None = None,
    *,
    input_path: str | None = None,
    result_path: str | None = None,
    result_selector: dict[str, Any] | None = None,
) -> tasks.LambdaInvoke:
    """A Lambda task returning the function's payload, retried on the transient errors only.

    ``payload`` is an object template (keys ending in ``.$`` are JSONPaths); without one the
    function gets the state (or its ``input_path`` part) as it is.
    """
    task = tasks.LambdaInvoke(
        scope,
        state_name,
        lambda_function=function,
        payload=sfn.TaskInput.from_object(payload) if payload else None,
        input_path=input_path,
        payload_response_only=True,
        retry_on_service_exceptions=False,  # replaced by the one documented retry below
        result_path=result_path,
        result_selector=result_selector,
    )
    task.add_retry(
        errors=list(names.TRANSIENT_ERRORS),
        interval=Duration.seconds(names.RETRY_INTERVAL_SECONDS),
        max_attempts=names.RETRY_MAX_ATTEMPTS,
        backoff_rate=names.RETRY_BACKOFF_RATE,
    )
    return task


def failure_path(scope: Construct, function: lambda_.IFunction, what: str) -> sfn.IChainable:
    """Call the failure function with the state (``error`` included), then fail with that error."""
    failed = sfn.Fail(
        scope,
        f"{what}Failed",
        comment=f"The {what.lower()} failed; Error and Cause are those of the failed step",
        error_path="$.error.Error",
        cause_path="$.error.Cause",
    )
    handle = tasks.LambdaInvoke(
        scope,
        "HandleFailure",
        lambda_function=function,
        payload_response_only=True,
        retry_on_service_exceptions=False,
        result_path=sfn.JsonPath.DISCARD,
    )
    handle.add_retry(
        errors=_LAMBDA_ERRORS,
        interval=Duration.seconds(names.RETRY_INTERVAL_SECONDS),
        max_attempts=names.RETRY_MAX_ATTEMPTS,
        backoff_rate=names.RETRY_BACKOFF_RATE,
    )
    # Even a broken failure handler must not hide the original error.
    handle.add_catch(failed, errors=[sfn.Errors.ALL], result_path="$.failure_handler_error")
    return handle.next(failed)


def on_fargate(
    scope: Construct, state_name: str, fargate: FargatePath, module: str, event: dict[str, Any]
) -> tuple[sfn.Pass, tasks.EcsRunTask]:
    """The handler ``module`` on a Fargate task, given ``event`` (an object template), returning the
    handler's output exactly as its Lambda does: the task reports it with the task token
    (``lambdas/task_runner.py``), retried on the same transient errors; a task that stops reporting
    fails with States.HeartbeatTimeout."""
    build = sfn.Pass(scope, f"{state_name}Event", parameters={"event": event})
    runner = fargate.runners[module]
    task = tasks.EcsRunTask(
        scope,
        state_name,
        integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
        cluster=fargate.cluster,
        task_definition=runner.definition,
        launch_target=tasks.EcsFargateLaunchTarget(platform_version=ecs.FargatePlatformVersion.LATEST),
        subnets=fargate.subnets,
        security_groups=fargate.security_groups,
        assign_public_ip=False,
        container_overrides=[
            tasks.ContainerOverride(
                container_definition=runner.container,
                environment=[
                    tasks.TaskEnvironmentVariable(
                        name="QB_TASK_EVENT",
                        value=sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.event")),
                    ),
                    tasks.TaskEnvironmentVariable(name="QB_TASK_TOKEN", value=sfn.JsonPath.task_token),
                ],
            )
        ],
        heartbeat_timeout=sfn.Timeout.duration(Duration.seconds(HEARTBEAT_SECONDS)),
        task_timeout=sfn.Timeout.duration(Duration.hours(TASK_TIMEOUT_HOURS)),
    )
    task.add_retry(
        errors=[error for error in names.TRANSIENT_ERRORS if not error.startswith("Lambda.")],
        interval=Duration.seconds(names.RETRY_INTERVAL_SECONDS),
        max_attempts=names.RETRY_MAX_ATTEMPTS,
        backoff_rate=names.RETRY_BACKOFF_RATE,
    )
    return build, task


def runs_on_fargate(path: str) -> sfn.Condition:
    """``path`` (a component's runtime, chosen by Prepare or Validate) says "fargate"."""
    return sfn.Condition.and_(sfn.Condition.is_present(path), sfn.Condition.string_equals(path, "fargate"))


def _catch_all(state: sfn.TaskStateBase | sfn.Parallel | sfn.Map, failure: sfn.IChainable) -> None:
    state.add_catch(failure, errors=[sfn.Errors.ALL], result_path="$.error")


def _state_machine(
    scope: Construct, definition: sfn.IChainable, timeout_hours: int, comment: str
) -> sfn.StateMachine:
    log_group = logs.LogGroup(scope, "Logs", retention=names.LOG_RETENTION)
    state_machine = sfn.StateMachine(
        scope,
        "StateMachine",
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        comment=comment,
        timeout=Duration.hours(timeout_hours),
        tracing_enabled=True,
        # ALL events for the execution timeline; payloads stay in the execution history only.
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
    )
    NagSuppressions.add_resource_suppressions(
        state_machine,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="LambdaInvoke grants the function's versions and aliases (ARN:*) of this stack's "
                "own functions only.",
                applies_to=[RegexAppliesTo(regex=r"/^Resource::<Functions[A-Za-z0-9]+\.Arn>:\*$/g")],
            ),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="Log delivery (logs:*LogDelivery, PutResourcePolicy) and X-Ray tracing calls that "
                "Step Functions needs support no resource-level permissions.",
                applies_to=["Resource::*"],
            ),
        ],
        apply_to_children=True,
    )
    return state_machine


class BackupWorkflow(Construct):
    """Prepare -> Dump (4 in parallel) -> Seal -> Verify -> Promote -> Publish -> Release.

    The state keeps what later steps need: ``{"backup"}`` from Prepare, ``components`` (the 4 dump
    entries) from Dump, then each step's result under its own key (``seal``, ``verify``,
    ``promote``). Any step's error goes to ``error`` (``{"Error", "Cause"}``) and the one failure
    path: backup_failure with the whole state, then a Fail state carrying that error.
    """

    state_machine: sfn.StateMachine

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: BackupFunctions,
        fargate: FargatePath | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        failure = failure_path(self, functions[names.BACKUP_FAILURE], "Backup")
        backup = {"backup.$": "$.backup"}

        prepare = invoke(
            self,
            "Prepare",
            functions[names.BACKUP_PREPARE],
            None,  # the whole input: {"type"} and, from a scheduled start, {"backup_id"}
            # "runtime": where each dump runs (Lambda, or a Fargate task for a large PostgreSQL).
            result_selector={**backup, "runtime.$": "$.runtime"},
            result_path="$",
        )
        # BACKUP_ENABLED=false is a deliberate refusal, not a failure (the CLI exits 0 for it too).
        prepare.add_catch(
            sfn.Succeed(self, "BackupDisabled", comment="Backups are disabled: nothing was done"),
            errors=[names.BACKUP_DISABLED_ERROR],
            result_path="$.error",
        )
        dump = sfn.Parallel(self, "Dump", result_path="$.components")
        dumps_ok = sfn.Choice(self, "AllDumpsSucceeded")
        for index, component in enumerate(names.COMPONENTS):
            task = invoke(
                self,
                f"Dump{component.capitalize()}",
                functions[names.BACKUP_DUMP],
                {"component": component, **backup},
            )
            # A failed branch ends its branch cleanly instead of failing the Parallel at once: Step
            # Functions would then stop waiting while the other dump Lambdas go on writing into the
            # staging prefix after the failure path has deleted it.
            task.add_catch(
                sfn.Pass(self, f"Dump{component.capitalize()}Caught"),
                errors=[sfn.Errors.ALL],
                result_path="$.error",
            )
            if fargate is not None and component in names.FARGATE_COMPONENTS:
                build, on_task = on_fargate(
                    self,
                    f"Dump{component.capitalize()}OnFargate",
                    fargate,
                    names.BACKUP_DUMP,
                    {"component": component, **backup},
                )
                on_task.add_catch(
                    sfn.Pass(self, f"Dump{component.capitalize()}OnFargateCaught"),
                    errors=[sfn.Errors.ALL],
                    result_path="$.error",
                )
                where = sfn.Choice(self, f"Dump{component.capitalize()}Where")
                where.when(runs_on_fargate(f"$.runtime.{component}"), build.next(on_task)).otherwise(task)
                dump.branch(where)
            else:
                dump.branch(task)
            dumps_ok.when(
                sfn.Condition.is_present(f"$.components[{index}].error"),
                sfn.Pass(
                    self,
                    f"Dump{component.capitalize()}Failed",
                    parameters={
                        "Error.$": f"$.components[{index}].error.Error",
                        "Cause.$": f"$.components[{index}].error.Cause",
                    },
                    result_path="$.error",
                ).next(failure),
            )
        steps: list[sfn.TaskStateBase | sfn.Parallel] = [
            invoke(
                self,
                "Seal",
                functions[names.BACKUP_SEAL],
                {**backup, "components.$": "$.components"},
                result_path="$.seal",
            ),
            invoke(self, "Verify", functions[names.BACKUP_VERIFY], backup, result_path="$.verify"),
            invoke(self, "Promote", functions[names.BACKUP_PROMOTE], backup, result_path="$.promote"),
            invoke(
                self,
                "Publish",
                functions[names.BACKUP_PUBLISH],
                {**backup, "components.$": "$.components"},
                # The execution's output says what the set holds and what was not configured.
                result_path="$.published",
            ),
            invoke(
                self, "Release", functions[names.BACKUP_RELEASE], backup, result_path=sfn.JsonPath.DISCARD
            ),
        ]
        for step in (prepare, dump, *steps):
            _catch_all(step, failure)
        after_dumps = sfn.Chain.start(steps[0])
        for step in steps[1:]:
            after_dumps = after_dumps.next(step)
        dumps_ok.otherwise(after_dumps.next(sfn.Succeed(self, "BackupSucceeded")))
        self.state_machine = _state_machine(
            self,
            sfn.Chain.start(prepare).next(dump).next(dumps_ok),
            names.BACKUP_STATE_MACHINE_TIMEOUT_HOURS,
            'Quest Board backup; input {"type": "full" | "incremental"}',
        )


class RestoreWorkflow(Construct):
    """Resolve -> Validate -> StageComponents (one at a time) -> Swap -> Verify -> Report.

    All or nothing: each component is restored into staging beside its target and checked there
    (``staged``); only then does Swap put every staged component in place in one short invocation,
    swapping back what it swapped if one fails. Any failure (a kill included) takes the failure path,
    whose function undoes this restore's staging and any unsettled swap, then alerts.

    The input moves to ``request``; Resolve gets it and returns ``{"restore": {...}}``, which
    replaces the state; then ``validated`` (Validate's ``{"components": [names]}``, mapped over in
    order, PostgreSQL first, each call getting ``{"component", "restore"}``), ``staged``, ``swapped``,
    ``verified`` and ``report``.
    """

    state_machine: sfn.StateMachine

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: BackupFunctions,
        fargate: FargatePath | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        failure = failure_path(self, functions[names.RESTORE_FAILURE], "Restore")
        restore = {"restore.$": "$.restore"}

        # The operator's input moves under "request", so that until Resolve succeeds the state has
        # no "restore" and its "backup" (a string) cannot be mistaken for a backup plan.
        read_request = sfn.Pass(self, "ReadRequest", parameters={"request.$": "$"})
        stage_components = sfn.Map(
            self,
            "StageComponents",
            items_path="$.validated.components",
            item_selector={"component.$": "$$.Map.Item.Value", "runtime.$": "$.validated.runtime", **restore},
            # One at a time, in list order: PostgreSQL first, as Validate orders them.
            max_concurrency=1,
            result_path="$.staged",
        )
        stage = invoke(self, "StageComponent", functions[names.RESTORE_COMPONENT])
        if fargate is None:
            stage_components.item_processor(stage)
        else:
            build, on_task = on_fargate(
                self,
                "StageComponentOnFargate",
                fargate,
                names.RESTORE_COMPONENT,
                {"component.$": "$.component", **restore},
            )
            where = sfn.Choice(self, "StageComponentWhere")
            for component in sorted(names.FARGATE_COMPONENTS):
                where.when(
                    sfn.Condition.and_(
                        sfn.Condition.string_equals("$.component", component),
                        runs_on_fargate(f"$.runtime.{component}"),
                    ),
                    build.next(on_task),
                )
            stage_components.item_processor(where.otherwise(stage))
        on_components = {**restore, "components.$": "$.validated.components"}
        steps: list[sfn.TaskStateBase | sfn.Map] = [
            invoke(
                self,
                "Resolve",
                functions[names.RESTORE_RESOLVE],
                input_path="$.request",
                result_selector=restore,
                result_path="$",
            ),
            invoke(self, "Validate", functions[names.RESTORE_VALIDATE], restore, result_path="$.validated"),
            stage_components,
            invoke(self, "Swap", functions[names.RESTORE_SWAP], on_components, result_path="$.swapped"),
            invoke(self, "Verify", functions[names.RESTORE_VERIFY], restore, result_path="$.verified"),
            invoke(
                self,
                "Report",
                functions[names.RESTORE_REPORT],
                {
                    **restore,
                    "validated.$": "$.validated",
                    "restored.$": "$.swapped.components",
                    "verified.$": "$.verified",
                },
                result_path="$.report",
            ),
        ]
        for step in steps:
            _catch_all(step, failure)
        definition = sfn.Chain.start(read_request)
        for step in steps:
            definition = definition.next(step)
        self.state_machine = _state_machine(
            self,
            definition.next(sfn.Succeed(self, "RestoreSucceeded")),
            names.RESTORE_STATE_MACHINE_TIMEOUT_HOURS,
            'Quest Board restore; input {"backup": "<id>|<s3 uri>|latest", "only"?: [...], "targets"?: {...}}',
        )
