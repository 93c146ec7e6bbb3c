"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active learning on a budget: opposite strategies suit high
and low budgets").

With few labels, the samples worth labeling are the *typical* ones -- in dense regions, which a model learns most
from -- spread over the data. TypiClust clusters an embedding of the whole pool into ``labeled + n`` clusters (at
most ``max_clusters``) and takes, from each of the least-covered clusters, largest first, its most typical
unlabeled sample (highest inverse mean distance to its nearest neighbours in the cluster). See
:func:`robustal.acquisition.diversity.typiclust_select`.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from robustal._validation import check_choice, check_int
from robustal.acquisition.badge import require_features
from robustal.acquisition.base import Acquisition, SelectionContext, register_acquisition
from robustal.acquisition.diversity import kmeans_clusters, typiclust_select
from robustal.data.dataset import to_float

#: What TypiClust clusters (see :class:`TypiClust`).
TYPICLUST_EMBEDDINGS = ("pca", "features")
#: Dimensions of the pixel PCA embedding.
PCA_DIMS = 50


@torch.no_grad()
def pixel_pca(x: torch.Tensor, dims: int = PCA_DIMS, *, device: torch.device | str = "cpu",
              chunk: int = 4096) -> torch.Tensor:
    """The images ``x`` ``(N, C, H, W)`` projected on the top ``dims`` principal axes of their pixels, ``(N, dims)``
    float32 on the CPU.

    Exact and deterministic: the pixel covariance is accumulated in float64 over chunks of ``chunk`` images (on
    ``device``), then diagonalised (``torch.linalg.eigh``); no ``N × pixels`` float copy of the pool is held.
    """
    n, d = len(x), x[0].numel()
    dims = min(dims, d, n)
    total = torch.zeros(d, dtype=torch.float64, device=device)
    gram = torch.zeros(d, d, dtype=torch.float64, device=device)
    for start in range(0, n, chunk):
        xb = to_float(x[start:start + chunk], device).flatten(1)
        total += xb.sum(0, dtype=torch.float64)
        gram += (xb.T @ xb).double()
    mean = total / n
    cov = gram / n - torch.outer(mean, mean)
    axes = torch.linalg.eigh(cov).eigenvectors[:, -dims:].flip(1).float()  # largest variance first
    return torch.cat([((to_float(x[s:s + chunk], device).flatten(1) - mean.float()) @ axes).cpu()
                      for s in range(0, n, chunk)])


#: The last pool's PCA embedding: (weak reference to the pool tensor, its version, dims, embedding).
_PCA_CACHE: list[tuple[weakref.ref, int, int, torch.Tensor]] = []


def cached_pixel_pca(x: torch.Tensor, dims: int = PCA_DIMS, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`pixel_pca` of ``x``, computed once per pool tensor (every stage of a run selects from the same one);
    a tensor changed in place since then is computed again."""
    for ref, version, cached_dims, embedding in _PCA_CACHE:
        if ref() is x and x._version == version and cached_dims == dims:
            return embedding
    embedding = pixel_pca(x, dims, device=device)
    _PCA_CACHE[:] = [(weakref.ref(x), x._version, dims, embedding)]
    return embedding


class TypiClust(Acquisition):
    """The most typical sample of each of the least-covered clusters; each pick's score is its typicality.

    Picks come in priority order (fewest labels, then largest cluster, first), so a prefix holds the typical samples
    of the largest uncovered clusters: ranked.

    Args:
        embedding: What is clustered.

            - ``pca`` (default): the pool's pixels projected on their top 50 principal axes, computed from the pool
              alone, once per pool. It does not depend on the model, so it stays meaningful when the model is
              still poor or at chance -- the low-budget regime TypiClust is for. (The paper uses a self-supervised
              embedding, SimCLR; PCA is the cheapest model-free stand-in that fits two CPU cores.)
            - ``features``: the current model's penultimate features of the whole pool, L2-normalised (the authors
              normalise their self-supervised features). They follow the model -- under adversarial training, the
              robust features the next stage builds on -- and cost one inference pass.

            Why ``pca`` is the default: on the MNIST pool after 100 random labels (LeNet-5, the study's PGD
            recipe, 3 seeds; ``benchmarks/low_budget_picks.py``), its 100 picks left the 200 labels closer to the
            pool's class frequencies (total-variation distance 0.059 against 0.090 with ``features``; rarest class
            16.0 against 14.0 labels) and covered the pool better (1-nearest-neighbour pixel accuracy of the 200
            labels on the pool 0.841 against 0.811; random: 0.082, 14.0, 0.775).
        max_clusters: At most this many clusters (the authors: 500).
        min_cluster_size: Clusters with fewer samples are ignored while a larger one has an unlabeled sample.
        neighbors: k of the typicality (the authors: 20; halved for clusters of fewer than 2k unlabeled samples).
    """

    def __init__(self, embedding: str = "pca", max_clusters: int = 500, min_cluster_size: int = 5,
                 neighbors: int = 20):
        self.embedding = check_choice(embedding, "embedding", "typiclust", TYPICLUST_EMBEDDINGS)
        self.max_clusters = check_int(max_clusters, "max_clusters", "typiclust", min_value=1)
        self.min_cluster_size = check_int(min_cluster_size, "min_cluster_size", "typiclust", min_value=1)
        self.neighbors = check_int(neighbors, "neighbors", "typiclust", min_value=1)

    def points(self, ctx: SelectionContext) -> torch.Tensor:
        """The embedding of the whole pool ``(N, D)``, in pool order."""
        if self.embedding == "pca":
            return cached_pixel_pca(ctx.pool_x, device=ctx.device)
        require_features(ctx, "'typiclust' with embedding='features'", ", or use embedding='pca'")
        unlabeled = ctx.predictions(features=True).features
        points = unlabeled.new_empty(len(ctx.pool_x), unlabeled.shape[1])
        points[ctx.unlabeled] = unlabeled
        if len(ctx.labeled):
            points[ctx.labeled] = ctx.labeled_features()
        return F.normalize(points, dim=1)

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        points = self.points(ctx)
        seed = int(torch.randint(2**31 - 1, (1,), generator=ctx.generator))
        clusters = kmeans_clusters(points, min(len(ctx.labeled) + n, self.max_clusters), seed)
        labeled = torch.zeros(len(points), dtype=torch.bool)
        labeled[ctx.labeled] = True
        picks, scores = typiclust_select(points, clusters, labeled, n, min_cluster_size=self.min_cluster_size,
                                         neighbors=self.neighbors)
        return torch.searchsorted(ctx.unlabeled, picks), scores


@register_acquisition("typiclust")
def typiclust_acquisition(embedding: str = "pca", max_clusters: int = 500, min_cluster_size: int = 5,
                          neighbors: int = 20) -> Acquisition:
    """The most typical sample of each largest uncovered cluster of a pixel-PCA embedding (Hacohen et al. 2022)."""
    return TypiClust(embedding, max_clusters, min_cluster_size, neighbors)
