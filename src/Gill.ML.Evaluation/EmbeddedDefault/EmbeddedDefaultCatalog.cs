using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>
/// The embedded default metrics on <see cref="GillEvaluationCatalog"/>: where the FID Inception and LPIPS trunk weights
/// are absent, the Fréchet distance and a perceptual distance on the ResNet-18 ImageNet features that ship with ML.NET.
/// Their metrics objects carry <see cref="ResNet18Features.Backbone"/>; never report them as FID or LPIPS.
/// </summary>
public static class EmbeddedDefaultEvaluation
{
    extension(GillEvaluationCatalog catalog)
    {
        /// <summary>Opens the ResNet-18 ImageNet featurizer (<c>DnnImageModels/</c> beside the application by default).</summary>
        public ResNet18Features LoadResNet18Features(string? modelsFolder = null) => ResNet18Features.Load(modelsFolder);

        /// <summary>FD-ResNet18 of two sets of images (<c>[3, H, W]</c> in [0, 1]; the sets may differ in size, at least 2 each).</summary>
        /// <exception cref="ArgumentException">A set has fewer than 2 images, or an image is malformed.</exception>
        public FrechetResNet18Metrics FrechetResNet18(ResNet18Features features, IReadOnlyList<Tensor> generatedImages, IReadOnlyList<Tensor> referenceImages, FidOptions? options = null)
        {
            ArgumentNullException.ThrowIfNull(features);
            CheckSet(generatedImages, "generated", nameof(generatedImages));
            CheckSet(referenceImages, "reference", nameof(referenceImages));
            using var a = features.Embed(generatedImages);
            using var b = features.Embed(referenceImages);
            return catalog.FrechetResNet18(a, b, options);
        }

        /// <summary>
        /// FD-ResNet18 from ResNet-18 feature matrices <c>[N, 512]</c> already computed. Sets with no more samples than
        /// dimensions use the exact low-rank form (the nuclear norm of the N₁ × N₂ cross-product), larger ones the FID code.
        /// </summary>
        public FrechetResNet18Metrics FrechetResNet18(Tensor generatedFeatures, Tensor referenceFeatures, FidOptions? options = null)
        {
            ArgumentNullException.ThrowIfNull(generatedFeatures);
            ArgumentNullException.ThrowIfNull(referenceFeatures);
            options ??= new FidOptions();
            if (generatedFeatures.dim() == 2 && referenceFeatures.dim() == 2 && LowRankFrechet.Applies(generatedFeatures, referenceFeatures))
                return new(LowRankFrechet.Compute(generatedFeatures, referenceFeatures, options));
            return new(catalog.Fid(generatedFeatures, referenceFeatures, options));
        }

        /// <summary>FD-ResNet18 of the images of two folders (all images of each; not paired).</summary>
        /// <exception cref="ArgumentException">A folder has fewer than 2 images.</exception>
        public FrechetResNet18Metrics FrechetResNet18FromFolders(ResNet18Features features, string generatedFolder, string referenceFolder, FidOptions? options = null, CancellationToken cancellationToken = default)
        {
            ArgumentNullException.ThrowIfNull(features);
            var a = ListAtLeastTwo(generatedFolder, nameof(generatedFolder));
            var b = ListAtLeastTwo(referenceFolder, nameof(referenceFolder));
            using var fa = FidEvaluator.ToMatrix(features.EmbedFiles(a, cancellationToken), "generated features");
            using var fb = FidEvaluator.ToMatrix(features.EmbedFiles(b, cancellationToken), "reference features");
            return catalog.FrechetResNet18(fa, fb, options);
        }

        /// <summary>
        /// ResNet-18 perceptual distance of image pairs: 1 − cosine of the pooled features of <paramref name="generatedImages"/>[i]
        /// and <paramref name="referenceImages"/>[i].
        /// </summary>
        /// <exception cref="ArgumentException">The lists are empty or differ in length, or an image is malformed.</exception>
        public ResNet18PerceptualMetrics ResNet18PerceptualDistance(ResNet18Features features, IReadOnlyList<Tensor> generatedImages, IReadOnlyList<Tensor> referenceImages,
            IReadOnlyList<string>? keys = null, BootstrapOptions? options = null)
        {
            ArgumentNullException.ThrowIfNull(features);
            ArgumentNullException.ThrowIfNull(generatedImages);
            ArgumentNullException.ThrowIfNull(referenceImages);
            CheckPairs(generatedImages.Count, referenceImages.Count, keys);
            return Perceptual(features.EmbedRows(generatedImages), features.EmbedRows(referenceImages), keys, options);
        }

        /// <summary>ResNet-18 perceptual distance of the images of two folders paired by file name.</summary>
        public ResNet18PerceptualMetrics ResNet18PerceptualDistanceFromFolders(ResNet18Features features, string generatedFolder, string referenceFolder,
            BootstrapOptions? options = null, CancellationToken cancellationToken = default)
        {
            ArgumentNullException.ThrowIfNull(features);
            var pairs = ImageFiles.PairByName(generatedFolder, referenceFolder);
            var a = features.EmbedFiles(pairs.Select(p => p.A).ToArray(), cancellationToken);
            var b = features.EmbedFiles(pairs.Select(p => p.B).ToArray(), cancellationToken);
            return Perceptual(a, b, pairs.Select(p => p.Name).ToArray(), options);
        }

        /// <summary>ResNet-18 perceptual distance of feature rows already computed (pairs in order).</summary>
        public ResNet18PerceptualMetrics ResNet18PerceptualDistance(IReadOnlyList<float[]> generatedFeatures, IReadOnlyList<float[]> referenceFeatures,
            IReadOnlyList<string>? keys = null, BootstrapOptions? options = null)
        {
            ArgumentNullException.ThrowIfNull(generatedFeatures);
            ArgumentNullException.ThrowIfNull(referenceFeatures);
            CheckPairs(generatedFeatures.Count, referenceFeatures.Count, keys);
            return Perceptual(generatedFeatures, referenceFeatures, keys, options);
        }
    }

    private static ResNet18PerceptualMetrics Perceptual(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b, IReadOnlyList<string>? keys, BootstrapOptions? options)
    {
        options ??= new BootstrapOptions();
        options.Validate();
        // The cosine (float64, norms floored at 1e-8) is the CLIP-similarity computation; the distance is 1 − cosine.
        var cos = ClipSimilarityEvaluator.Evaluate(a, b, keys, new BootstrapOptions { BootstrapResamples = 0 });
        var scores = cos.Scores.Select(c => Math.Max(0, 1 - c)).ToArray();
        return new ResNet18PerceptualMetrics(scores, keys, Bootstrap.MeanInterval(scores, options));
    }

    private static void CheckPairs(int generated, int reference, IReadOnlyList<string>? keys)
    {
        if (generated == 0) throw new ArgumentException("The ResNet-18 perceptual distance needs at least one pair; the generated set is empty.");
        if (generated != reference)
            throw new ArgumentException($"The ResNet-18 perceptual distance compares pairs: there are {generated} generated images but {reference} reference images.");
        if (keys is not null && keys.Count != generated)
            throw new ArgumentException($"{keys.Count} keys were given for {generated} pairs.", nameof(keys));
    }

    private static void CheckSet(IReadOnlyList<Tensor> images, string role, string parameter)
    {
        ArgumentNullException.ThrowIfNull(images, parameter);
        if (images.Count < 2)
            throw new ArgumentException($"FD-ResNet18 needs at least 2 {role} images (a covariance divides by N − 1); got {images.Count}.", parameter);
    }

    private static IReadOnlyList<string> ListAtLeastTwo(string folder, string parameter)
    {
        var files = ImageFiles.List(folder);
        if (files.Count < 2)
            throw new ArgumentException($"FD-ResNet18 needs at least 2 images; '{folder}' has {files.Count}.", parameter);
        return files;
    }
}
