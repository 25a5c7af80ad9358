"""The fine-tuning loop behind ``zoo train``: timm's data, optimizer, scheduler, mixup, EMA and AMP helpers, one
process or many (DDP under torchrun), and the run folder written by rank 0 after every epoch.

``train(args)`` takes the parsed ``zoo train`` arguments (see ``zoo/commands/train.py`` for their meaning and
defaults) and returns the last epoch's summary. Rank 0 holds the run folder's lock for the whole run (a second
``zoo train`` on the same ``--out`` is refused, naming this one) and releases it however the run ends; the folder's
guarantees (atomic files, metrics committed with the state, cleaning after a kill) are ``runs.py``'s. Ctrl-C ends the
run with a ``KeyboardInterrupt`` whose message says what the folder holds and how to go on (``attnzoo.cli`` prints it
as one line).
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

import torch
from timm.data import Mixup, create_loader, resolve_model_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad, distribute_bn, random_seed
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ...models import build_model
from ...models.builder import folder_img_size, img_size_kwargs
from ..images import DEFAULT_MAX_PIXELS
from .auxiliary_losses import add_auxiliary_losses
from .datasets import DatasetError, build_dataset, class_to_index_for_model, find_split, scan_image_folder
from .distributed import Processes, sum_across_ranks
from .evaluation import AMP_DTYPES, autocast, evaluate, make_eval_loader
from .models import is_model_folder, load_backbone_weights
from .runs import (
    STATE_NAME,
    RunError,
    RunLock,
    RunRecord,
    hold_interrupts,
    pause_for_tests,
    prepare_run_folder,
    read_state,
    recipe_of,
    restore_metrics,
    resume_recipe,
    show_flag,
    write_epoch,
)

__all__ = ["RunError", "train"]


def _hw(size) -> tuple[int, int]:
    """An int or (H, W) image size as (H, W)."""
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


def _build_model(args, num_classes: int, processes: Processes) -> torch.nn.Module:
    kwargs = dict(args.model_kwargs)
    if args.drop_path is not None:
        kwargs["drop_path_rate"] = args.drop_path
    # --img-size builds the model at that size where its constructor takes img_size (else only the data changes)
    size = img_size_kwargs(args.model, args.img_size, num_classes=num_classes, **kwargs)
    if size and "img_size" in kwargs and _hw(kwargs["img_size"]) != _hw(args.img_size):
        raise RunError(f"--img-size {args.img_size} and --model-kwargs img_size={kwargs['img_size']!r} disagree; "
                       "pass one of them.")
    kwargs.update(size)
    # A model folder holds weights at its own size (no family filter reads it): load them at that size, then move
    # the model to --img-size with set_input_size (timm's in-place resize, resampling what depends on the size).
    source_size = target_size = None
    if size and args.pretrained and not args.resume and is_model_folder(args.pretrained):
        source_size = folder_img_size(args.pretrained)
        if source_size is not None and source_size != _hw(args.img_size):
            target_size, kwargs["img_size"] = kwargs["img_size"], source_size
    model = build_model(args.model, pretrained=False, num_classes=num_classes, **kwargs)
    if args.pretrained and not args.resume:
        load_backbone_weights(model, args.pretrained)
    if target_size is not None:
        if not hasattr(model, "set_input_size"):
            raise RunError(f"{args.model} has no set_input_size, so weights saved at {source_size} cannot move to "
                           f"--img-size {args.img_size}; train at {source_size[0]} or start from a checkpoint file.")
        model.set_input_size(img_size=target_size)
    if args.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise RunError(f"{args.model} has no gradient checkpointing (set_grad_checkpointing); drop "
                           "--grad-checkpointing.")
        model.set_grad_checkpointing(True)
    return model.to(processes.device)


def _recipe(args, processes: Processes, layer_decay: float | None) -> dict:
    recipe = {
        "epochs": args.epochs,
        "batch size": f"{args.batch_size} x {processes.world_size} process(es)",
        "optimizer": f"{args.opt}, lr {args.lr}, weight decay {args.weight_decay}"
                     + (f", layer decay {layer_decay}" if layer_decay else ""),
        "schedule": f"{args.sched}, {args.warmup_epochs} warmup epoch(s), min lr {args.min_lr}",
        "augmentation": "none" if args.no_aug else
                        f"random resized crop scale {tuple(args.scale)}, colour jitter {args.color_jitter}, hflip",
        "label smoothing": args.smoothing,
        "amp": args.amp,
    }
    if args.mixup or args.cutmix:
        recipe["mixup / cutmix"] = f"{args.mixup} / {args.cutmix}"
    if args.model_ema:
        recipe["model_ema"] = f"decay {args.model_ema_decay} (validated and saved)"
    if args.grad_checkpointing:
        recipe["gradient checkpointing"] = "on"
    return recipe


def train(args, processes: Processes) -> dict:
    out = Path(args.out)
    argv = getattr(args, "argv", None)
    command = "zoo " + shlex.join(argv) if argv is not None else shlex.join(sys.argv)
    lock = failure = None
    resume = False
    done = {"epoch": 0}
    try:
        if processes.is_primary:
            try:
                lock = RunLock.acquire(out, command)
                resume = prepare_run_folder(out, args.resume, lock)
            except RunError as err:
                failure = err
        if processes.distributed:  # every rank learns what rank 0 found, so none trains into a refused folder
            failed, resume_flag = sum_across_ranks([float(failure is not None), float(resume)], processes)
            resume = resume_flag > 0
            if failed and failure is None:
                raise RunError(f"{out}: rank 0 refused the run folder (its message says why).")
        if failure is not None:
            raise failure
        return _train(args, processes, out, resume, done)
    except KeyboardInterrupt:
        if not processes.is_primary:
            raise
        if done["epoch"] or resume:
            held = f"epoch {done['epoch']} of {args.epochs}" if done["epoch"] else "its last completed epoch"
            again = "run the same command again" if args.resume else "run the same command with --resume"
            message = f"{out} holds {held}; {again} to continue."
        else:
            again = "run the same command without --resume" if args.resume else "run the same command again"
            message = f"{out} holds no completed epoch; {again} to start afresh."
        raise KeyboardInterrupt(message) from None
    finally:
        if lock is not None:
            lock.release()


def _train(args, processes: Processes, out: Path, resume: bool, done: dict) -> dict:
    """The run itself, in a folder prepared by ``train``; ``done["epoch"]`` follows the last committed epoch."""
    state = None
    if resume:  # the run's own recipe first: it says how the model is built and trained (runs.resume_recipe)
        state = read_state(out)
        resume_recipe(out, args, state, getattr(args, "given", None))
    random_seed(args.seed, processes.rank)
    verbose = processes.is_primary

    max_pixels = getattr(args, "max_pixels", DEFAULT_MAX_PIXELS)
    train_scan = scan_image_folder(find_split(args.data, "train"), check_images=not args.no_image_check,
                                   verbose=verbose, max_pixels=max_pixels)
    classes = train_scan.classes
    train_dataset = build_dataset(train_scan, {c: i for i, c in enumerate(classes)})
    val_folder = find_split(args.data, "val", required=False)
    val_dataset = None
    if val_folder is not None and val_folder != train_scan.root:
        val_scan = scan_image_folder(val_folder, check_images=not args.no_image_check, verbose=verbose,
                                     max_pixels=max_pixels)
        val_dataset = build_dataset(val_scan, class_to_index_for_model(val_scan, len(classes), classes),
                                    shard=(processes.rank, processes.world_size))

    model = _build_model(args, len(classes), processes)
    overrides = {k: v for k, v in (("img_size", args.img_size), ("crop_pct", args.crop_pct)) if v is not None}
    data_config = resolve_model_data_config(model, args=overrides)
    device = processes.device
    use_prefetcher = device.type == "cuda"
    train_loader = create_loader(
        train_dataset, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, scale=tuple(args.scale), color_jitter=args.color_jitter, hflip=0.5,
        interpolation=data_config["interpolation"], mean=data_config["mean"], std=data_config["std"],
        num_workers=args.workers, distributed=processes.distributed, use_prefetcher=use_prefetcher, device=device,
        pin_memory=use_prefetcher, persistent_workers=args.workers > 0)
    if len(train_loader) == 0:
        raise DatasetError(f"{train_scan.root}: {train_scan.num_images} images make no full batch of "
                           f"{args.batch_size} per process x {processes.world_size}; lower --batch-size.")
    val_loader = (make_eval_loader(val_dataset, data_config, args.batch_size, args.workers, device)
                  if val_dataset is not None else None)

    layer_decay = args.layer_decay
    if layer_decay is not None and not hasattr(model, "group_matcher"):
        raise RunError(f"{args.model} has no group_matcher, so no layer-wise lr decay; drop --layer-decay.")
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    layer_decay=layer_decay)
    amp_dtype = AMP_DTYPES[args.amp]
    scaler = NativeScaler(device=device.type) if amp_dtype is torch.float16 else None
    ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None

    start_epoch = 0
    history: list[dict] = []  # every committed epoch's metrics (rank 0)
    if state is not None:
        if state.get("architecture") != model.pretrained_cfg["architecture"] or state.get("classes") != classes:
            raise RunError(f"{out}: the run there trained {state.get('architecture')} on classes "
                           f"{state.get('classes')}; resume it with the same MODEL and --data.")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            built = "; ".join(show_flag(d, getattr(args, d)) for d in ("model", "model_kwargs", "img_size", "drop_path"))
            raise RunError(f"{out}: its {STATE_NAME} does not fit the model the run's recipe builds ({built}): "
                           f"{str(err).splitlines()[0][:200]}; the file is damaged or another run's, so --resume "
                           f"cannot continue it; start again in another --out (or with --pretrained {out} to start "
                           "from the weights in its model.safetensors).") from err
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        if verbose:
            history = restore_metrics(out, state)  # metrics.jsonl as the state says: every committed epoch once
        done["epoch"] = start_epoch
        if start_epoch >= args.epochs:
            raise RunError(f"{out}: already trained {start_epoch} epochs; pass --epochs above {start_epoch} to "
                           "train on.")

    train_model = model
    if processes.distributed:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                       warmup_epochs=args.warmup_epochs, min_lr=args.min_lr, warmup_lr=args.warmup_lr,
                                       updates_per_epoch=len(train_loader))
    if start_epoch > 0:
        scheduler.step(start_epoch)  # as timm's train.py: put the lr where the run left it

    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                      num_classes=len(classes))
        criterion = SoftTargetCrossEntropy()
    elif args.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()

    record = RunRecord(model.pretrained_cfg["architecture"], args.argv, str(args.data), classes,
                       _recipe(args, processes, layer_decay),
                       f"from {args.pretrained}, head re-initialised" if args.pretrained else "from random weights")
    num_updates = start_epoch * len(train_loader)
    summary: dict = {}
    for epoch in range(start_epoch, args.epochs):
        started = time.perf_counter()
        if processes.distributed:
            train_loader.sampler.set_epoch(epoch)
        train_model.train()
        loss_sum = seen = 0.0
        epoch_lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trains with (scheduler.step below sets the next)
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False,
                   disable=not verbose)
        for step, (inputs, targets) in enumerate(bar):
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if mixup is not None:
                inputs, targets = mixup(inputs, targets)
            with autocast(device, amp_dtype):
                loss = add_auxiliary_losses(criterion(train_model(inputs), targets), model)  # e.g. MoH balance
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}; lower --lr (or use --amp bf16 "
                                         "instead of fp16).")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler(loss, optimizer, clip_grad=args.clip_grad, parameters=model.parameters())
            else:
                loss.backward()
                if args.clip_grad is not None:
                    dispatch_clip_grad(model.parameters(), args.clip_grad)
                optimizer.step()
            num_updates += 1
            if ema is not None:
                ema.update(model, step=num_updates)
            scheduler.step_update(num_updates=num_updates)
            loss_sum += loss.item() * inputs.shape[0]
            seen += inputs.shape[0]
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if step == 0:
                pause_for_tests("batch", epoch + 1)
        scheduler.step(epoch + 1)
        if processes.distributed:
            distribute_bn(model, processes.world_size, reduce=True)  # no-op for models without BatchNorm
        loss_sum, seen = sum_across_ranks([loss_sum, seen], processes)

        eval_model = ema.module if ema is not None else model
        val = None
        if val_loader is not None:
            result = evaluate(eval_model, val_loader, processes, amp_dtype, progress=verbose, desc="val")
            val = dict(data=str(val_folder), images=result.images, top1=result.top1, top5=result.top5,
                       top5_k=result.top5_k, loss=result.loss)
        seconds = time.perf_counter() - started
        summary = dict(epoch=epoch + 1, epochs=args.epochs, train_loss=loss_sum / seen,
                       lr=epoch_lr, seconds=round(seconds, 2),
                       top1=val["top1"] if val else None, top5=val["top5"] if val else None,
                       val_images=val["images"] if val else 0)
        if verbose:
            line = f"epoch {epoch + 1}/{args.epochs}  train loss {loss_sum / seen:.4f}  lr {summary['lr']:.2e}"
            if val:
                line += (f"  val top-1 {val['top1']:.2f}  top-{val['top5_k']} {val['top5']:.2f}  "
                         f"loss {val['loss']:.4f}")
            print(line + f"  ({seconds:.1f} s)", flush=True)
            history.append(summary)
            state = dict(epoch=epoch + 1, epochs=args.epochs, architecture=model.pretrained_cfg["architecture"],
                         classes=classes, recipe=recipe_of(args), model=model.state_dict(), optimizer=optimizer.state_dict(),
                         ema=ema.module.state_dict() if ema is not None else None,
                         scaler=scaler.state_dict() if scaler is not None else None, metrics=list(history))
            with hold_interrupts():  # a Ctrl-C meanwhile ends the run after the commit, and says so
                write_epoch(out, record, eval_model, state, data_config, val)
                done["epoch"] = epoch + 1
    return summary
