using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Generation;

/// <summary>
/// The conditioning a text-to-image generator consumes: <see cref="SequenceLength"/> (L) vectors of
/// <see cref="EmbeddingDim"/> (m) floats per image (77×768 for Stable Diffusion v1.x). A value of 0 means the model
/// does not fix that dimension.
/// </summary>
public readonly record struct ConditioningShape(int SequenceLength, int EmbeddingDim)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"[B, {(SequenceLength > 0 ? SequenceLength.ToString() : "L")}, {(EmbeddingDim > 0 ? EmbeddingDim.ToString() : "m")}]";
}

/// <summary>Which denoising scheduler a generation uses.</summary>
public enum SchedulerKind
{
    /// <summary>The scheduler named by the pipeline's scheduler/scheduler_config.json.</summary>
    Default,
    /// <summary>DDIM (eta 0, deterministic).</summary>
    Ddim,
    /// <summary>PNDM with PLMS steps (skip_prk_steps), Stable Diffusion v1.5's default.</summary>
    Pndm,
}

/// <summary>Options of one generation call.</summary>
public sealed class ImageGenerationOptions
{
    /// <summary>Seed of one CPU torch generator that draws the initial latents of the whole batch at once.</summary>
    public long? Seed { get; set; }

    /// <summary>One seed per image (each image draws its latents [1,C,h,w] from its own generator); overrides <see cref="Seed"/>.</summary>
    public IReadOnlyList<long>? Seeds { get; set; }

    /// <summary>Number of denoising steps (default 50).</summary>
    public int Steps { get; set; } = 50;

    /// <summary>Classifier-free guidance scale g (default 7.5); g ≤ 1 disables guidance (one UNet pass per step).</summary>
    public double GuidanceScale { get; set; } = 7.5;

    /// <summary>
    /// Negative (unconditional) embeddings [1,L,m] or [B,L,m]; default: the generator's embedding of the empty prompt.
    /// </summary>
    public Tensor? NegativeEmbeddings { get; set; }

    /// <summary>Output height in pixels (default: the model's native size); must be a multiple of the VAE scale.</summary>
    public int? Height { get; set; }

    /// <summary>Output width in pixels (default: the model's native size); must be a multiple of the VAE scale.</summary>
    public int? Width { get; set; }

    /// <summary>Initial latents [B,C,h,w] to start from instead of seeded noise (they fix the output size).</summary>
    public Tensor? InitialLatents { get; set; }

    /// <summary>Scheduler to use (default: the pipeline's configured one).</summary>
    public SchedulerKind Scheduler { get; set; } = SchedulerKind.Default;

    /// <summary>Keep the latents after every UNet call in <see cref="GeneratedImages.LatentsPerCall"/>.</summary>
    public bool KeepIntermediateLatents { get; set; }
}

/// <summary>Progress of a generation: UNet call <see cref="Call"/> of <see cref="TotalCalls"/> at <see cref="Timestep"/>.</summary>
public readonly record struct ImageGenerationProgress(int Call, int TotalCalls, long Timestep);

/// <summary>
/// Generated images as a float RGB tensor [B,3,H,W] with values in [0,1] (CPU, float32), plus conversions.
/// Dispose it to free the tensors.
/// </summary>
public sealed class GeneratedImages : IDisposable
{
    internal GeneratedImages(Tensor images, Tensor? latentsPerCall, long[] timesteps, IReadOnlyList<long>? seeds)
    {
        Images = images;
        LatentsPerCall = latentsPerCall;
        Timesteps = timesteps;
        Seeds = seeds;
    }

    /// <summary>Images [B,3,H,W], float32 in [0,1].</summary>
    public Tensor Images { get; }

    /// <summary>Latents after each UNet call [calls,B,C,h,w] when requested, else null.</summary>
    public Tensor? LatentsPerCall { get; }

    /// <summary>The timesteps of the UNet calls, in order.</summary>
    public long[] Timesteps { get; }

    /// <summary>The seeds the initial latents were drawn with (null when initial latents were given).</summary>
    public IReadOnlyList<long>? Seeds { get; }

    /// <summary>Number of images B.</summary>
    public int Count => (int)Images.shape[0];

    /// <summary>Image <paramref name="index"/> as a [3,H,W] tensor (a view; do not use after disposing this object).</summary>
    public Tensor this[int index]
    {
        get
        {
            if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), $"Image index {index} is outside 0..{Count - 1}.");
            return Images[index];
        }
    }

    /// <summary>Image <paramref name="index"/> encoded as PNG bytes (8-bit RGBA, values rounded from x·255).</summary>
    public byte[] ToPng(int index)
    {
        using var scope = torch.NewDisposeScope();
        return ImageTensorIO.ToPngBytes(this[index]);
    }

    /// <summary>Saves image <paramref name="index"/> as a PNG file (written to a temporary file, then renamed).</summary>
    public void SavePng(int index, string path)
    {
        using var scope = torch.NewDisposeScope();
        ImageTensorIO.SavePng(this[index], path);
    }

    /// <summary>Image <paramref name="index"/> as an ML.NET <see cref="MLImage"/> (RGBA32).</summary>
    public MLImage ToMLImage(int index)
    {
        using var scope = torch.NewDisposeScope();
        return ImageTensorIO.ToMLImage(this[index]);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Images.Dispose();
        LatentsPerCall?.Dispose();
    }
}

/// <summary>
/// A text-to-image generator conditioned on prompt embeddings [B,L,m] (for Stable Diffusion: the CLIP text encoder's
/// last hidden state, or GILL's mapper output that imitates it).
/// </summary>
public interface IImageGenerator : IDisposable
{
    /// <summary>The conditioning shape (L, m) the generator expects; GILL checks its mapper output against it.</summary>
    ConditioningShape ConditioningShape { get; }

    /// <summary>
    /// Generates one image per row of <paramref name="promptEmbeddings"/> (float tensor [B,L,m]).
    /// </summary>
    GeneratedImages Generate(Tensor promptEmbeddings, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Generates images from prompt embeddings given as a flat row-major float array with shape
    /// <paramref name="shape"/> = [B,L,m].
    /// </summary>
    GeneratedImages Generate(float[] promptEmbeddings, long[] shape, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default);
}
