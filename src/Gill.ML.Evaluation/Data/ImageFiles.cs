using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>Decodes image files (PNG, JPEG, BMP, GIF, WebP) with SkiaSharp into float RGB tensors in [0, 1].</summary>
public static class ImageFiles
{
    private static readonly HashSet<string> Extensions = new(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp" };

    /// <summary>True when the file name has an image extension this reader decodes.</summary>
    public static bool IsImageFile(string path) => Extensions.Contains(Path.GetExtension(path));

    /// <summary>The image files of a folder (not recursive), sorted by file name (ordinal).</summary>
    public static IReadOnlyList<string> List(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Image folder not found: '{folder}'.");
        return Directory.EnumerateFiles(folder).Where(IsImageFile).OrderBy(p => Path.GetFileName(p), StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// Pairs the images of two folders by file name: the names present in both, sorted. Throws when no name is shared.
    /// </summary>
    public static IReadOnlyList<(string Name, string A, string B)> PairByName(string folderA, string folderB)
    {
        var a = List(folderA).ToDictionary(p => Path.GetFileName(p), StringComparer.Ordinal);
        var b = List(folderB).ToDictionary(p => Path.GetFileName(p), StringComparer.Ordinal);
        var names = a.Keys.Where(b.ContainsKey).OrderBy(n => n, StringComparer.Ordinal).ToList();
        if (names.Count == 0)
            throw new ArgumentException($"No image file name is shared by '{folderA}' ({a.Count} images) and '{folderB}' ({b.Count} images); pairs are matched by file name.");
        return names.Select(n => (n, a[n], b[n])).ToList();
    }

    /// <summary>
    /// Decodes one image to a <c>[3, H, W]</c> float32 tensor in [0, 1] (RGB, alpha dropped without compositing, as
    /// PIL's <c>convert("RGB")</c> does).
    /// </summary>
    public static Tensor LoadRgb(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Image file not found: '{path}'.", path);
        using var codec = SKCodec.Create(path) ?? throw new InvalidDataException($"'{path}' is not an image SkiaSharp can decode.");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput))
            throw new InvalidDataException($"Could not decode '{path}': {result}.");
        var bytes = bitmap.Bytes;
        int h = info.Height, w = info.Width;
        var rgb = new byte[3 * h * w];
        int plane = h * w;
        for (int i = 0; i < plane; i++)
        {
            rgb[i] = bytes[4 * i];
            rgb[plane + i] = bytes[4 * i + 1];
            rgb[2 * plane + i] = bytes[4 * i + 2];
        }
        using var u8 = torch.tensor(rgb, new long[] { 3, h, w });
        return u8.to(ScalarType.Float32).div_(255.0);
    }

    /// <summary>Writes a <c>[3, H, W]</c> tensor in [0, 1] as a PNG file (atomically; used for test and sample images).</summary>
    public static void SavePng(Tensor image, string path)
    {
        if (image.dim() != 3 || image.shape[0] != 3)
            throw new ArgumentException($"Expected an image tensor [3, H, W], got {Gill.ML.Serialization.SafeTensors.FormatShape(image.shape)}.", nameof(image));
        int h = (int)image.shape[1], w = (int)image.shape[2];
        byte[] data;
        using (var scope = torch.NewDisposeScope())
        {
            var u8 = image.detach().cpu().to(ScalarType.Float32).clamp(0, 1).mul(255).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous();
            data = u8.data<byte>().ToArray();
        }
        var info = new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        var px = new byte[4 * w * h];
        for (int i = 0; i < w * h; i++)
        {
            px[4 * i] = data[3 * i];
            px[4 * i + 1] = data[3 * i + 1];
            px[4 * i + 2] = data[3 * i + 2];
            px[4 * i + 3] = 255;
        }
        System.Runtime.InteropServices.Marshal.Copy(px, 0, bitmap.GetPixels(), px.Length);
        using var encoded = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        var full = Path.GetFullPath(path);
        var tmp = Path.Combine(Path.GetDirectoryName(full)!, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            using (var fs = File.Create(tmp)) encoded.SaveTo(fs);
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }
}
