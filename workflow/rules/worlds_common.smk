# Glue of a noise study (worlds.smk includes it; functions only, like common.smk): the worlds' trees,
# their configs and the modules file that makes each a module of the root Snakefile, with the shared
# tree's module where the worlds share datasets (cmgh.worlds, cmgh.plan.Plan.shared).


def worlds_root():
    return cmgh_config.resolve_path(CFG.worlds.root)


def world_tree(setting):
    """Results tree of one world (``noise0.3``, ``text0.2``): its own data, features and results."""
    return worlds_root() / setting.name


def tree_config(modality, rate):
    """The full config of one world's tree (called by the modules file's `config:` statements), with what
    it reads from the shared tree."""
    tree = worlds.tree_config(CFG.to_dict(), worlds.NoiseSetting(modality, float(rate)), worlds_root())
    if sharing():
        tree[worlds.SHARED_SETS_KEY] = PLAN.shared.to_dict()
    return tree


def shared_config():
    """The config of the shared tree (called by the modules file's `config:` statement of its module)."""
    return worlds.shared_config(CFG.to_dict(), worlds_root())


def sharing():
    """Whether the worlds share datasets (not with object storage: a world reads them through links in its tree)."""
    return bool(PLAN.shared) and not STORAGE


def world_modules_file():
    """The Snakefile of one module per world, and the shared tree's (cmgh.worlds.modules_snakefile), included below."""
    path = worlds_root() / "config" / "modules.smk"
    snakefile = os.path.relpath(Path(workflow.basedir) / "Snakefile", path.parent)  # resolved from this file's folder
    shared = shared_config.__name__ if sharing() else None
    write_if_changed(path, worlds.modules_snakefile(WORLDS, snakefile, tree_config.__name__, shared))
    return str(path)
